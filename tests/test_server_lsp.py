"""Round trips through a real pipe to the real server process (scripted model)."""

from __future__ import annotations

import pytest
from lsprotocol import types

from server_harness import edit, fake_spec, inline_params, lsp_session, open_doc, stats

pytestmark = pytest.mark.asyncio


async def test_initialize_advertises_features(tmp_path):
    async with lsp_session(fake_spec(), root=tmp_path) as client:
        caps = client.init_result.capabilities
        assert caps.inline_completion_provider is not None
        assert caps.completion_provider is not None
        assert caps.code_action_provider.resolve_provider is True
        assert caps.position_encoding == "utf-16"
        assert [s.state for s in client.statuses][-1] == "ready"


async def test_inline_completion_round_trip(tmp_path):
    uri = (tmp_path / "a.py").as_uri()
    async with lsp_session(fake_spec(text="hello_world(1, 2)"), root=tmp_path) as client:
        open_doc(client, uri, "x = \n")
        result = await client.text_document_inline_completion_async(inline_params(uri, 0, 4, explicit=True))
        assert [item.insert_text for item in result.items] == ["hello_world(1, 2)"]
        assert result.items[0].range == types.Range(types.Position(0, 4), types.Position(0, 4))
        assert result.items[0].command is not None
