"""Helix cannot be installed here: its languages.toml is checked, and the server is driven the way
Helix drives it (utf-8 positions, a completion request per keystroke never cancelled, code
actions resolved then applied)."""

from __future__ import annotations

import asyncio
import sys

import pytest
from lsprotocol import types

from editor_common import EDITORS
from qwen_lsp.cli import build_parser
from qwen_lsp.server.settings import KNOWN_KEYS
from server_harness import lsp_session, open_doc

if sys.version_info >= (3, 11):
    import tomllib
else:  # the test extra installs tomli on 3.10
    import tomli as tomllib

HELIX_CAPABILITIES = types.ClientCapabilities(
    general=types.GeneralClientCapabilities(position_encodings=["utf-8", "utf-32", "utf-16"]),
    workspace=types.WorkspaceClientCapabilities(
        configuration=True, apply_edit=True, workspace_folders=True,
        did_change_configuration=types.DidChangeConfigurationClientCapabilities(dynamic_registration=False),
        workspace_edit=types.WorkspaceEditClientCapabilities(
            document_changes=True,
            resource_operations=[types.ResourceOperationKind.Create, types.ResourceOperationKind.Rename,
                                 types.ResourceOperationKind.Delete],
        ),
    ),
    text_document=types.TextDocumentClientCapabilities(
        completion=types.CompletionClientCapabilities(
            completion_item=types.ClientCompletionItemOptions(
                snippet_support=True, insert_replace_support=True, deprecated_support=True,
                resolve_support=types.ClientCompletionItemResolveOptions(
                    properties=["documentation", "detail", "additionalTextEdits"]),
            ),
        ),
        code_action=types.CodeActionClientCapabilities(
            code_action_literal_support=types.ClientCodeActionLiteralOptions(
                code_action_kind=types.ClientCodeActionKindOptions(value_set=["", "quickfix", "refactor",
                                                                              "refactor.extract", "refactor.inline",
                                                                              "refactor.rewrite", "source"])),
            is_preferred_support=True, disabled_support=True, data_support=True,
            resolve_support=types.ClientCodeActionResolveOptions(properties=["edit", "command"]),
        ),
    ),
    window=types.WindowClientCapabilities(work_done_progress=True),
)


def load_config() -> dict:
    return tomllib.loads((EDITORS / "helix" / "languages.toml").read_text())


def test_languages_toml_adds_qwen_beside_the_usual_server():
    config = load_config()
    server = config["language-server"]["qwen-lsp"]
    assert build_parser().parse_args([*server["args"]]).command == "serve"
    assert server["command"] == "qwen-lsp" and isinstance(server["timeout"], int)
    assert set(server["config"]["qwenLsp"]) <= KNOWN_KEYS
    python = next(lang for lang in config["language"] if lang["name"] == "python")
    assert python["language-servers"] == ["pylsp", "qwen-lsp"]
    assert all(lang["language-servers"][-1] == "qwen-lsp" and len(lang["language-servers"]) == 2
               for lang in config["language"])


@pytest.mark.asyncio
async def test_server_answers_helix_requests(workspace, tiny_model):
    path = workspace / "rect.py"
    text = "def rectangle_area(width, height):\n    pass\n\n\né = rectangle_area(2, 3)\n"
    path.write_text(text)
    uri = path.as_uri()
    # Helix sends the file's config as initializationOptions; here on the tiny model, not the default one.
    config = load_config()["language-server"]["qwen-lsp"]["config"]
    options = {"qwenLsp": config["qwenLsp"] | {"model": str(tiny_model), "maxTokens": 6}}
    async with lsp_session(str(tiny_model), root=workspace, capabilities=HELIX_CAPABILITIES,
                           init_options=options) as client:
        assert client.init_result.capabilities.position_encoding == "utf-8"
        assert not client.init_result.capabilities.completion_provider.resolve_provider  # so no resolve is sent
        open_doc(client, uri, text)
        pending = []
        line, col = 4, len("é = rectangle_area(2, 3)\n".encode()) - 1  # after the existing last line
        for version, ch in enumerate("\nr = rect", start=2):  # Helix: one request per keystroke, no cancel
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                [types.TextDocumentContentChangePartial(range=types.Range(types.Position(line, col),
                                                                          types.Position(line, col)), text=ch)]))
            line, col = (line + 1, 0) if ch == "\n" else (line, col + len(ch.encode()))
            pending.append(client.text_document_completion_async(types.CompletionParams(
                types.TextDocumentIdentifier(uri), types.Position(line, col))))
        results = await asyncio.wait_for(asyncio.gather(*pending), 120)
        assert all(isinstance(r, types.CompletionList) and r.is_incomplete for r in results)
        for item in results[-1].items:  # the typed word is replaced by itself plus the suggestion
            assert item.text_edit.range == types.Range(types.Position(5, 4), types.Position(5, 8))
            assert item.text_edit.new_text.startswith("rect") and item.filter_text == item.text_edit.new_text

        body = types.Range(types.Position(1, 4), types.Position(1, 4))
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            types.TextDocumentIdentifier(uri), body, types.CodeActionContext(diagnostics=[])))
        assert actions and all(a.edit is None and a.command is None and a.data for a in actions)
        resolved = await asyncio.wait_for(client.code_action_resolve_async(actions[0]), 120)
        assert resolved.title == actions[0].title and resolved.edit is not None
