"""Starting the real server process behind a pytest-lsp client, for the server tests.

The model is the tiny random Qwen2 (``tiny_server_model`` fixture: mechanics) or the real GGUF
(a right answer), given to ``lsp_session`` as the server's ``--model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

REPO = Path(__file__).resolve().parent.parent


def server_command(model: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "qwen_lsp.server", "--model", model, *extra]


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


@contextlib.asynccontextmanager
async def lsp_session(model: str, *, root: Path | None = None, capabilities: types.ClientCapabilities | None = None,
                      init_options=None, encodings: list[str] | None = None, wait_ready: bool = True):
    """A pytest-lsp client talking to a fresh server process over its stdio pipe."""
    client: LanguageClient = await ClientServerConfig(server_command=server_command(model), server_env=server_env()).start()
    client.statuses = []
    client.feature("qwenLsp/status")(lambda params: client.statuses.append(params))
    caps = capabilities or client_capabilities("visual-studio-code")
    if encodings is not None:
        caps.general = types.GeneralClientCapabilities(position_encodings=encodings)
    folders = [types.WorkspaceFolder(uri=root.as_uri(), name=root.name)] if root else None
    try:
        client.init_result = await client.initialize_session(
            types.InitializeParams(capabilities=caps, workspace_folders=folders, initialization_options=init_options,
                                   root_uri=root.as_uri() if root else None)
        )
        if wait_ready:
            await wait_for_state(client, {"ready", "error"})
        yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.shutdown_session(), 10)
        with contextlib.suppress(Exception):
            await client.stop()


async def wait_for_state(client: LanguageClient, states: set[str], timeout: float = 120.0) -> str:
    async def poll() -> str:
        while True:
            for status in reversed(client.statuses):
                state = getattr(status, "state", None)
                if state in ("ready", "error", "loading", "generating"):
                    if state in states:
                        return state
                    break
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout)


def open_doc(client: LanguageClient, uri: str, text: str, language: str = "python", version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, language, version, text)))


def edit(client: LanguageClient, uri: str, version: int, line: int, col: int, text: str, end: tuple[int, int] | None = None) -> None:
    """Replace ``line:col..end`` (default: insert at line:col) with ``text``."""
    end = end or (line, col)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        [types.TextDocumentContentChangePartial(range=types.Range(types.Position(line, col), types.Position(*end)), text=text)],
    ))


def inline_params(uri: str, line: int, col: int, explicit: bool = False) -> types.InlineCompletionParams:
    kind = types.InlineCompletionTriggerKind.Invoked if explicit else types.InlineCompletionTriggerKind.Automatic
    return types.InlineCompletionParams(
        context=types.InlineCompletionContext(trigger_kind=kind),
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, col),
    )


async def stats(client: LanguageClient) -> dict:
    """The server's ``qwenLsp/stats`` counters as plain dicts."""
    return _plain(await client.protocol.send_request_async("qwenLsp/stats", {}))


def _plain(value):
    """pygls hands unknown JSON objects back as named tuples; these tests want dicts."""
    if hasattr(value, "_asdict"):
        return {key: _plain(item) for key, item in value._asdict().items()}
    return dict(value) if isinstance(value, dict) else value


_UNIT_CODECS = {"utf-8": ("utf-8", 1), "utf-16": ("utf-16-le", 2), "utf-32": ("utf-32-le", 4)}


def units(text: str, encoding: str = "utf-16") -> int:
    """The length of ``text`` in the code units of an LSP position encoding."""
    codec, size = _UNIT_CODECS[encoding]
    return len(text.encode(codec)) // size


def unit_slice(line: str, start: int, end: int | None = None, encoding: str = "utf-16") -> str:
    """``line[start:end]`` with start and end in the code units of an LSP position encoding."""
    codec, size = _UNIT_CODECS[encoding]
    data = line.encode(codec)
    return data[size * start : None if end is None else size * end].decode(codec)


def apply_item(line: str, item: types.InlineCompletionItem, encoding: str = "utf-16") -> str:
    """The cursor's line after accepting ``item`` (its range lies on that line)."""
    return (unit_slice(line, 0, item.range.start.character, encoding) + item.insert_text
            + unit_slice(line, item.range.end.character, None, encoding))


def send_raw(client: LanguageClient, method: str, params, msg_id: str) -> asyncio.Future:
    """Send a request exactly as given (no client-side typing); the future gets its response."""
    future = asyncio.get_running_loop().create_future()
    client.protocol._request_futures[msg_id] = future
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return future


async def raw_request(client: LanguageClient, method: str, params, msg_id: str = "raw-1"):
    return await asyncio.wait_for(send_raw(client, method, params, msg_id), 10)
