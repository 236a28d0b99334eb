"""Starting the real server process behind a pytest-lsp client, for the server tests.

``fake_spec`` gives a scripted model (see fake_runtime.py); the tiny random Qwen2 fixture and
the real GGUF plug in through the same ``model`` argument of ``lsp_session``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from urllib.parse import urlencode

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

REPO = Path(__file__).resolve().parent.parent
FAKE_SERVER = str(Path(__file__).resolve().parent / "fake_server.py")


def fake_spec(**params) -> str:
    return "fake?" + urlencode(params)


def server_command(model: str, *extra: str) -> list[str]:
    if model.startswith("fake?"):
        return [sys.executable, FAKE_SERVER, "--model", model, *extra]
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
    result = await client.protocol.send_request_async("qwenLsp/stats", {})
    return result._asdict() if hasattr(result, "_asdict") else dict(result)


def send_raw(client: LanguageClient, method: str, params, msg_id: str) -> asyncio.Future:
    """Send a request exactly as given (no client-side typing); the future gets its response."""
    future = asyncio.get_running_loop().create_future()
    client.protocol._request_futures[msg_id] = future
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return future


async def raw_request(client: LanguageClient, method: str, params, msg_id: str = "raw-1"):
    return await asyncio.wait_for(send_raw(client, method, params, msg_id), 10)
