"""LSP side of code actions: titles at once, the model on ``codeAction/resolve``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from qwen_lsp.server import code_actions
from qwen_lsp.server.documents import Document
from qwen_lsp.server.roots import uri_of

if TYPE_CHECKING:
    from qwen_lsp.server.server import QwenLanguageServer

log = logging.getLogger(__name__)
_ACTION_TOKENS = 256
_ACTION_TIME_FACTOR = 4  # actions may take this many completion time budgets


def _supports_resolve(ls: QwenLanguageServer) -> bool:
    td = ls.client_capabilities.text_document
    support = td and td.code_action and td.code_action.resolve_support
    return bool(support and "edit" in support.properties)


def list_actions(ls: QwenLanguageServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    """The applicable actions with titles and data only; no model work."""
    doc = ls.documents.get(params.text_document.uri)
    if doc is None or len(doc.text) > ls.settings.max_file_bytes or not ls.settings.enabled_for(doc.language_id):
        return []
    line = params.range.start.line
    if not 0 <= line < doc.line_count:
        return []
    actions = []
    for kind in code_actions.available(doc.text, doc.language_id, line):
        if kind == code_actions.TEST and ls.roots.path_of(doc.uri) is None:
            continue  # the test file must live inside a workspace root
        data = {"kind": kind, "uri": doc.uri, "line": line}
        action = types.CodeAction(title=code_actions.TITLES[kind], kind=types.CodeActionKind.RefactorRewrite, data=data)
        if not _supports_resolve(ls):
            action.command = types.Command(code_actions.TITLES[kind], "qwenLsp.codeAction", [data])
        actions.append(action)
    return actions


async def resolve_action(ls: QwenLanguageServer, action: types.CodeAction) -> types.CodeAction:
    """Fill in ``action.edit`` by running the model."""
    data = action.data if isinstance(action.data, dict) else {}
    edit = await resolve_edit(ls, data)
    if edit is not None:
        action.edit = edit
    return action


def _test_file(ls: QwenLanguageServer):
    def locate(path: str, name: str) -> tuple[str, str | None]:
        root = ls.roots.root_of(path)
        test_path = code_actions.test_path_for(path, str(root) if root else None)
        open_doc = ls.documents.get(uri_of(test_path))
        return test_path, open_doc.text if open_doc else ls.roots.read_text(test_path)

    return locate


async def resolve_edit(ls: QwenLanguageServer, data: dict[str, Any]) -> types.WorkspaceEdit | None:
    """Run the action described by ``data`` and return its edit (None if it no longer applies)."""
    kind, uri, line = data.get("kind"), data.get("uri"), data.get("line")
    doc = ls.documents.get(uri) if isinstance(uri, str) else None
    if doc is None or kind not in code_actions.TITLES or not isinstance(line, int):
        return None
    path = ls.roots.path_of(doc.uri)
    plan = code_actions.plan(kind, doc.text, line, path, _test_file(ls))
    if plan is None:
        ls.warn_user(f"{code_actions.TITLES[kind]}: no longer applies here")
        return None
    if plan.path is not None and ls.roots.root_of(plan.path) is None:
        ls.warn_user("refusing to write outside the workspace roots")
        return None
    version = doc.version
    request = ls.request_for(doc, plan.offset, text=plan.text, max_new_tokens=max(_ACTION_TOKENS, ls.settings.max_tokens),
                             time_budget_ms=_ACTION_TIME_FACTOR * ls.settings.time_budget_ms)
    suggestions = await ls.suggestions.suggest(request, version, explicit=True, lane=ls.actions_lane)
    if not suggestions:
        return None
    return _workspace_edit(ls, doc, plan.finish(suggestions[0]))


def _workspace_edit(ls: QwenLanguageServer, doc: Document, edits: list[code_actions.Edit]) -> types.WorkspaceEdit:
    changes: list[Any] = []
    by_target: dict[str, list[types.TextEdit]] = {}
    versions: dict[str, int | None] = {doc.uri: doc.version}
    for edit in edits:
        if edit.path is None:
            target_uri, target = doc.uri, doc
        else:
            target_uri = uri_of(edit.path)
            open_doc = ls.documents.get(target_uri)
            versions[target_uri] = open_doc.version if open_doc else None
            text = open_doc.text if open_doc else (ls.roots.read_text(edit.path) or "")
            target = Document(target_uri, "python", 0, text)
            if edit.create:
                changes.append(types.CreateFile(uri=target_uri, options=types.CreateFileOptions(ignore_if_exists=True)))
        rng = types.Range(target.position_at(edit.start, ls.encoding), target.position_at(edit.end, ls.encoding))
        by_target.setdefault(target_uri, []).append(types.TextEdit(range=rng, new_text=edit.text))
    for target_uri, text_edits in by_target.items():
        identifier = types.OptionalVersionedTextDocumentIdentifier(target_uri, versions[target_uri])
        changes.append(types.TextDocumentEdit(identifier, text_edits))
    return types.WorkspaceEdit(document_changes=changes)
