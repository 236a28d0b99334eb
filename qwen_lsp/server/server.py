"""pygls wiring: LSP handlers that translate to and from the plain core."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from qwen_lsp.server.code_action_lsp import list_actions, resolve_action, resolve_edit
from qwen_lsp.server.completer import CompletionRequest
from qwen_lsp.server.completion_cache import CompletionCache
from qwen_lsp.server.completion_items import completion_list
from qwen_lsp.server.debounce import AdaptiveDebounce
from qwen_lsp.server.documents import Document, DocumentStore, PositionError
from qwen_lsp.server.inline import ACCEPT_COMMAND, inline_items
from qwen_lsp.server.model_host import Lane, ModelHost
from qwen_lsp.server.pipeline_completer import PipelineCompleter
from qwen_lsp.server.positions import UTF16
from qwen_lsp.server.protocol import QwenProtocol
from qwen_lsp.server.roots import WorkspaceRoots
from qwen_lsp.server.settings import KNOWN_KEYS, SECTION, Settings, merge_settings
from qwen_lsp.server.status import ERROR, GENERATING, LOADING, READY, StatusReporter
from qwen_lsp.server.suggestions import SuggestionService

log = logging.getLogger(__name__)

VERSION = "0.1.0"
CODE_ACTION_COMMAND = "qwenLsp.codeAction"
STATS_REQUEST = "qwenLsp/stats"
LAST_PROMPT_REQUEST = "qwenLsp/lastPrompt"
DID_SHOW = "textDocument/didShowCompletion"
DID_PARTIALLY_ACCEPT = "textDocument/didPartiallyAcceptCompletion"
_LOG_TYPES = {"error": 1, "warning": 2, "info": 3, "debug": 4}


class QwenLanguageServer(LanguageServer):
    """Server state: documents, settings, the model host and the suggestion service."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        super().__init__("qwen-lsp", VERSION, protocol_cls=QwenProtocol, **kwargs)
        self.documents = DocumentStore()
        self.roots = WorkspaceRoots()
        self.settings = settings or Settings()
        self.encoding = UTF16
        self.host = ModelHost()
        self.status = StatusReporter(self.protocol.notify)
        self.completer = PipelineCompleter()
        self.suggestions = SuggestionService(
            self.host,
            self.completer,
            AdaptiveDebounce(self.settings.debounce_ms),
            CompletionCache(),
            self._version_of,
            self._busy_changed,
        )
        self.actions_lane = Lane()
        self.last_shown: dict[str, tuple[CompletionRequest, list[str]]] = {}
        self._load_task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    # -- helpers -----------------------------------------------------------------------

    def _version_of(self, uri: str) -> int | None:
        doc = self.documents.get(uri)
        return doc.version if doc else None

    def _busy_changed(self, busy: bool) -> None:
        if self.host.ready:
            self.status.set(GENERATING if busy else READY)

    def log_to_client(self, level: str, message: str) -> None:
        """``window/logMessage`` filtered by the ``logLevel`` setting."""
        getattr(log, level)(message)
        if _LOG_TYPES[level] <= _LOG_TYPES[self.settings.log_level]:
            self.window_log_message(types.LogMessageParams(types.MessageType(_LOG_TYPES[level]), message))

    def warn_user(self, message: str) -> None:
        self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, f"qwen-lsp: {message}"))
        self.log_to_client("warning", message)

    def apply_settings(self, raw: Any, source: str) -> bool:
        """Merge ``raw`` into the settings; returns True when the model changed."""
        new, warnings = merge_settings(self.settings, raw)
        for warning in warnings:
            self.warn_user(f"{source}: {warning}")
        model_changed = new.model != self.settings.model
        if new.debounce_ms != self.settings.debounce_ms:
            self.suggestions.debounce.base_ms = new.debounce_ms
        self.settings = new
        logging.getLogger("qwen_lsp").setLevel(new.log_level.upper())
        return model_changed

    def spawn(self, coro) -> asyncio.Task:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def load_model(self) -> None:
        """Load the configured model with progress, status and log messages."""
        spec = self.settings.model
        self.status.set(LOADING, f"loading {spec}", model=spec)
        self.log_to_client("info", f"loading model {spec}")
        token = None
        if (self.client_capabilities.window or types.WindowClientCapabilities()).work_done_progress:
            token = f"qwen-lsp-load-{uuid.uuid4()}"
            try:
                await asyncio.wait_for(self.work_done_progress.create_async(token), 5)
                self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="qwen-lsp", message=f"Loading {spec}"))
            except Exception:
                log.warning("client refused a progress token", exc_info=True)
                token = None
        started = time.monotonic()
        await self.host.load(spec)
        if self.host.spec != spec:
            return  # a newer load started
        if self.host.ready:
            state, message = READY, f"model {spec} ready in {time.monotonic() - started:.1f} s"
            self.log_to_client("info", message)
        else:
            state, message = ERROR, f"cannot load model {spec}: {self.host.error}"
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"qwen-lsp: {message}"))
            self.log_to_client("error", message)
        if token is not None:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        self.status.set(state, message)  # last: clients waiting for it have seen the rest

    def reload_model(self) -> None:
        self._load_task = self.spawn(self.load_model())

    async def pull_configuration(self) -> None:
        """Ask the client for our section (``workspace/configuration``) if it supports it."""
        workspace = self.client_capabilities.workspace
        if not (workspace and workspace.configuration):
            return
        try:
            result = await asyncio.wait_for(
                self.workspace_configuration_async(types.ConfigurationParams([types.ConfigurationItem(section=SECTION)])), 5
            )
        except Exception:
            log.warning("workspace/configuration failed", exc_info=True)
            return
        if result and result[0] is not None:
            if self.apply_settings(result[0], "workspace/configuration") and self.host.state != "idle":
                self.reload_model()

    def cursor(self, uri: str, position: types.Position) -> tuple[Document, int] | None:
        """The open document and cursor offset, or None when completion is off for it.

        A line outside the document is a client error (InvalidParams); a column past the end of
        its line is clamped, as the LSP specification says.
        """
        doc = self.documents.get(uri)
        if doc is None:
            return None
        try:
            offset = doc.offset_at(position, self.encoding)
        except PositionError as exc:
            raise JsonRpcInvalidParams(str(exc)) from exc
        if not self.settings.enabled_for(doc.language_id) or len(doc.text) > self.settings.max_file_bytes:
            return None
        return doc, offset

    def request_for(self, doc: Document, offset: int, *, candidates: int = 1, text: str | None = None,
                    max_new_tokens: int | None = None, time_budget_ms: int | None = None) -> CompletionRequest:
        return CompletionRequest(
            uri=doc.uri,
            path=self.roots.path_of(doc.uri),
            language_id=doc.language_id,
            text=doc.text if text is None else text,
            offset=offset,
            max_new_tokens=max_new_tokens or self.settings.max_tokens,
            context_budget=self.settings.context_budget,
            time_budget_ms=time_budget_ms or self.settings.time_budget_ms,
            candidates=candidates,
        )

    async def suggest_at(self, uri: str, position: types.Position, *, explicit: bool, candidates: int = 1):
        """(document, offset, suggestions) for a completion request; suggestions None when stale."""
        found = self.cursor(uri, position)
        if found is None:
            return None, 0, []
        doc, offset = found
        request = self.request_for(doc, offset, candidates=candidates)
        suggestions = await self.suggestions.suggest(request, doc.version, explicit=explicit)
        if suggestions:
            self.last_shown[uri] = (request, suggestions)
        return doc, offset, suggestions


def build_server(settings: Settings | None = None) -> QwenLanguageServer:
    """Create the server with every handler registered."""
    server = QwenLanguageServer(settings)

    @server.feature(types.INITIALIZE)
    def initialize(ls: QwenLanguageServer, params: types.InitializeParams) -> None:
        ls.encoding = str(getattr(ls.workspace.position_encoding, "value", ls.workspace.position_encoding) or UTF16)
        for folder in params.workspace_folders or []:
            ls.roots.add(folder.uri)
        if not params.workspace_folders and params.root_uri:
            ls.roots.add(params.root_uri)
        for root in ls.roots.paths:
            ls.completer.add_root(root)
        client = (params.client_info.name if params.client_info else "").lower()
        if "neovim" in client or "nvim" in client:
            ls.suggestions.debounce.base_ms = 0  # Neovim waits 200 ms itself before asking
        ls.apply_settings(params.initialization_options, "initializationOptions")

    @server.feature(types.INITIALIZED)
    async def initialized(ls: QwenLanguageServer, params: types.InitializedParams) -> None:
        await ls.pull_configuration()
        ls.reload_model()

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: QwenLanguageServer, params: None) -> None:
        ls.host.shutdown()
        ls.completer.close()

    # -- documents and workspace -------------------------------------------------------

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: QwenLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        doc = ls.documents.open(params.text_document)
        path = ls.roots.path_of(doc.uri)
        if path is not None and len(doc.text) <= ls.settings.max_file_bytes:
            ls.completer.file_changed(path, doc.text)
            ls.completer.touched(path, 0, edited=False)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: QwenLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        doc = ls.documents.change(params, ls.encoding)
        if doc is None:
            log.warning("didChange for unopened %s ignored", uri)
            return
        ls.suggestions.debounce.keystroke(uri, time.monotonic())
        path = ls.roots.path_of(uri)
        if path is None:
            return
        for change in params.content_changes:
            if getattr(change, "range", None) is not None:
                ls.completer.touched(path, change.range.start.line, edited=True)
        if len(doc.text) <= ls.settings.max_file_bytes:
            ls.completer.file_edited(path, doc.text)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=True))
    def did_save(ls: QwenLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        doc = ls.documents.get(params.text_document.uri)
        if doc is None:
            return
        if params.text is not None and params.text != doc.text:
            doc.apply_change(types.TextDocumentContentChangeWholeDocument(text=params.text), ls.encoding)
        path = ls.roots.path_of(doc.uri)
        if path is not None and len(doc.text) <= ls.settings.max_file_bytes:
            ls.completer.file_changed(path, doc.text)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: QwenLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.documents.close(uri)
        ls.suggestions.cache.forget(uri)
        ls.suggestions.debounce.forget(uri)
        ls.last_shown.pop(uri, None)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: QwenLanguageServer, params: types.DidChangeWatchedFilesParams) -> None:
        for change in params.changes:
            path = ls.roots.path_of(change.uri)
            if path is not None and ls.documents.get(change.uri) is None:  # open buffers are fresher
                ls.completer.file_changed(path, None)

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    def did_change_folders(ls: QwenLanguageServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
        for folder in params.event.removed:
            root = ls.roots.remove(folder.uri)
            if root is not None:
                ls.completer.remove_root(root)
        for folder in params.event.added:
            ls.roots.add(folder.uri)
        for root in ls.roots.paths:
            ls.completer.add_root(root)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: QwenLanguageServer, params: types.DidChangeConfigurationParams) -> None:
        raw = params.settings
        if isinstance(raw, dict) and SECTION not in raw and not (raw.keys() & KNOWN_KEYS):
            raw = None  # settings for other tools, or the "pull" model: ask for ours
        if raw is None:
            await ls.pull_configuration()
        elif ls.apply_settings(raw, "didChangeConfiguration"):
            ls.reload_model()

    # -- completion ----------------------------------------------------------------------

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: QwenLanguageServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        explicit = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        candidates = ls.settings.candidates if explicit else 1
        doc, offset, suggestions = await ls.suggest_at(params.text_document.uri, params.position, explicit=explicit, candidates=candidates)
        if not suggestions:
            return types.InlineCompletionList(items=[])
        return types.InlineCompletionList(items=inline_items(doc, offset, suggestions, ls.encoding))

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", " "], resolve_provider=False))
    async def completion(ls: QwenLanguageServer, params: types.CompletionParams) -> types.CompletionList:
        doc, offset, suggestions = await ls.suggest_at(params.text_document.uri, params.position, explicit=False)
        if not suggestions:
            return types.CompletionList(is_incomplete=True, items=[])
        return completion_list(doc, offset, suggestions, ls.encoding, doc.language_id)

    @server.feature(DID_SHOW)
    def did_show(ls: QwenLanguageServer, params: Any) -> None:
        uri = _shown_uri(params)
        if uri:
            ls.suggestions.debounce.shown(uri)

    @server.feature(DID_PARTIALLY_ACCEPT)
    def did_partially_accept(ls: QwenLanguageServer, params: Any) -> None:
        uri = _shown_uri(params)
        if uri:
            ls.suggestions.debounce.accepted(uri)

    @server.command(ACCEPT_COMMAND)
    async def accepted(ls: QwenLanguageServer, *args: Any) -> None:
        info = _first_dict(args)
        uri = info.get("uri")
        if not isinstance(uri, str):
            return
        ls.suggestions.debounce.accepted(uri)
        shown = ls.last_shown.get(uri)
        text = info.get("text")
        if shown and isinstance(text, str) and text in shown[1]:
            follow_up = ls.suggestions.after_accept(shown[0], text)
            ls.spawn(ls.suggestions.precompute(follow_up))

    @server.feature(STATS_REQUEST)
    def stats(ls: QwenLanguageServer, params: Any) -> dict:
        return {**ls.suggestions.counters.as_dict(), "cache_entries": len(ls.suggestions.cache),
                "documents": len(ls.documents), "state": ls.status.state,
                "last_generation": ls.completer.last_generation}

    @server.feature(LAST_PROMPT_REQUEST)
    def last_prompt(ls: QwenLanguageServer, params: Any) -> dict:
        """The last prompt given to the model (editors' "show last prompt")."""
        return {"prompt": getattr(ls.completer, "last_prompt", "")}

    # -- code actions -------------------------------------------------------------------

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.RefactorRewrite], resolve_provider=True),
    )
    def code_action(ls: QwenLanguageServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        return list_actions(ls, params)

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def code_action_resolve(ls: QwenLanguageServer, action: types.CodeAction) -> types.CodeAction:
        return await resolve_action(ls, action)

    @server.command(CODE_ACTION_COMMAND)
    async def run_code_action(ls: QwenLanguageServer, *args: Any) -> None:
        edit = await resolve_edit(ls, _first_dict(args))
        if edit is not None:
            await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label="qwen-lsp"))

    return server


def _first_dict(args: tuple) -> dict:
    """The first dict argument of a command (pygls may nest the argument list)."""
    for arg in args:
        if isinstance(arg, (list, tuple)):
            found = _first_dict(tuple(arg))
            if found:
                return found
        if isinstance(arg, dict):
            return arg
        if hasattr(arg, "_asdict"):
            return arg._asdict()
    return {}


def _shown_uri(params: Any) -> str | None:
    """The document URI in a Copilot-style didShow/didPartiallyAccept notification."""
    item = getattr(params, "item", None)
    command = getattr(item, "command", None)
    for arg in getattr(command, "arguments", None) or []:
        uri = getattr(arg, "uri", None) or (arg.get("uri") if isinstance(arg, dict) else None)
        if isinstance(uri, str):
            return uri
    return None

