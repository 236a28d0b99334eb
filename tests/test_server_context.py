"""Unsaved edits reach the repository context: the index and the recent regions (real pipe,
tiny random model; the checks read the prompt, not the model's text)."""

from __future__ import annotations

import pytest

from server_harness import edit, inline_params, lsp_session, open_doc

pytestmark = pytest.mark.asyncio


async def _last_prompt(client) -> str:
    return (await client.protocol.send_request_async("qwenLsp/lastPrompt", {})).prompt


async def test_unsaved_edits_are_indexed_and_recent_before_the_next_completion(tmp_path, tiny_server_model):
    (tmp_path / "shapes.py").write_text("def old_area(r):\n    return r * r\n")
    (tmp_path / "notes.py").write_text("NOTES = []\n" + "".join(f"LINE_{i} = {i}\n" for i in range(40)))
    (tmp_path / "main.py").write_text("")
    shapes, notes, main = ((tmp_path / name).as_uri() for name in ("shapes.py", "notes.py", "main.py"))
    async with lsp_session(tiny_server_model, root=tmp_path, init_options={"contextBudget": 4096}) as client:
        open_doc(client, shapes, "def old_area(r):\n    return r * r\n")
        open_doc(client, notes, (tmp_path / "notes.py").read_text())
        # Unsaved: a new function in shapes.py, a new line in the middle of notes.py.
        edit(client, shapes, 2, 2, 0, "\n\ndef brand_new_volume(side):\n    return side ** 3\n")
        edit(client, notes, 2, 30, 0, "UNSAVED_MARKER = 'typed, not saved'\n")
        open_doc(client, main, "from shapes import brand_new_volume\n\nv = brand_new_volume(\n")
        await client.text_document_inline_completion_async(inline_params(main, 2, 21, explicit=True))
        prompt = await _last_prompt(client)
        assert "def brand_new_volume(side):" in prompt  # the import resolved against the edited text
        assert "UNSAVED_MARKER" in prompt  # the edited region of notes.py, as recent context
        assert not (tmp_path / "shapes.py").read_text().count("brand_new_volume")
