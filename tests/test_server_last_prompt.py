"""``qwenLsp/lastPrompt``: what the editors' "show last prompt" command displays."""

from __future__ import annotations

import pytest

from server_harness import inline_params, lsp_session, open_doc

pytestmark = pytest.mark.asyncio


async def test_last_prompt_holds_the_text_around_the_cursor(tmp_path, tiny_server_model):
    uri = (tmp_path / "a.py").as_uri()
    async with lsp_session(tiny_server_model, root=tmp_path) as client:
        assert (await client.protocol.send_request_async("qwenLsp/lastPrompt", {})).prompt == ""
        open_doc(client, uri, "def add(a, b):\n    return a + \n")
        await client.text_document_inline_completion_async(inline_params(uri, 1, 15, explicit=True))
        prompt = (await client.protocol.send_request_async("qwenLsp/lastPrompt", {})).prompt
        assert "def add(a, b):\n    return a + " in prompt and "<|fim_middle|>" in prompt
