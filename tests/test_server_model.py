"""The server on real runtime models: the tiny random Qwen2 (mechanics) and the real 0.5B."""

from __future__ import annotations

import asyncio
import os

import pytest
from lsprotocol import types

from server_harness import edit, inline_params, lsp_session, open_doc, stats

pytestmark = pytest.mark.asyncio


async def test_tiny_random_model_round_trip(tmp_path, tiny_model_dir):
    uri = (tmp_path / "a.py").as_uri()
    async with lsp_session(str(tiny_model_dir("qwen2")), root=tmp_path) as client:
        assert client.statuses[-1].state == "ready", client.statuses
        open_doc(client, uri, "def add(a, b):\n    return \n")
        result = await client.text_document_inline_completion_async(inline_params(uri, 1, 11, explicit=True))
        assert isinstance(result, types.InlineCompletionList)
        for item in result.items:  # random weights: any text, but well-formed items
            assert item.insert_text.startswith("") and item.range.start.line == 1
        completion = await client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(1, 11)))
        assert completion.is_incomplete
        edit(client, uri, 2, 1, 11, "a")
        pending = [client.text_document_inline_completion_async(inline_params(uri, 1, 12)) for _ in range(20)]
        results = await asyncio.wait_for(asyncio.gather(*pending), 60)
        assert all(isinstance(r, types.InlineCompletionList) for r in results)
        assert (await stats(client))["model_calls"] >= 1


@pytest.mark.real_model
async def test_real_model_completes_fibonacci(tmp_path):
    gguf = os.environ.get("QWEN_LSP_TEST_GGUF")
    if not gguf:
        pytest.skip("QWEN_LSP_TEST_GGUF is not set")
    uri = (tmp_path / "fib.py").as_uri()
    text = "def fibonacci(n):\n    if n < 2:\n        return n\n    return \n"
    async with lsp_session(gguf, root=tmp_path, init_options={"timeBudgetMs": 60000, "maxTokens": 24}) as client:
        assert client.statuses[-1].state == "ready", client.statuses
        open_doc(client, uri, text)
        result = await asyncio.wait_for(
            client.text_document_inline_completion_async(inline_params(uri, 3, 11, explicit=True)), 300)
        [item] = result.items
        assert item.insert_text.replace(" ", "") == "fibonacci(n-1)+fibonacci(n-2)"
