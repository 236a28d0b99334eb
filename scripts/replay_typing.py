"""Replay a typing session against the language server over its real stdio pipe.

For a few lines of a source file the line is blanked and then typed again key by key, the way
VS Code drives inline completion: ``didChange`` then an automatic ``inlineCompletion`` per
keystroke, ``$/cancelRequest`` for the previous request when the next key arrives, and a pause
at the end of each line. Prints the time from each ``didChange`` to its answered
``inlineCompletion`` response (p50/p90) and the share of requests the server answered from its
own cache (``qwenLsp/stats``).

    python scripts/replay_typing.py --model /path/to/model.gguf --file qwen_lsp/server/debounce.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

REPO = Path(__file__).resolve().parent.parent


def server_command(model: str, python: str) -> list[str]:
    return [python, "-m", "qwen_lsp.server", "--model", model]


def pick_lines(text: str, count: int, seed: int) -> list[int]:
    lines = text.split("\n")
    candidates = [i for i, line in enumerate(lines) if 12 <= len(line.strip()) <= 60 and not line.strip().startswith("#")]
    rng = random.Random(seed)
    return sorted(rng.sample(candidates, min(count, len(candidates))))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def replay(args: argparse.Namespace) -> dict:
    source = Path(args.file).resolve()
    root = Path(args.workspace).resolve() if args.workspace else source.parent
    original = source.read_text(encoding="utf-8")
    targets = pick_lines(original, args.lines, args.seed)
    client = LanguageClient("replay", "0")
    ready = asyncio.Event()
    state: dict = {}

    @client.feature("qwenLsp/status")
    def on_status(params):
        state["status"] = getattr(params, "state", None)
        if state["status"] in ("ready", "error"):
            ready.set()

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def on_log(params):
        pass

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def on_show(params):
        print(f"server: {params.message}", file=sys.stderr)

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(args.threads))
    await client.start_io(*server_command(args.model, sys.executable), env=env)
    init_options = {"timeBudgetMs": args.time_budget_ms, "maxTokens": args.max_tokens, "contextBudget": args.context_budget}
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), root_uri=root.as_uri(),
        workspace_folders=[types.WorkspaceFolder(root.as_uri(), root.name)], initialization_options=init_options))
    client.initialized(types.InitializedParams())
    started = time.monotonic()
    await asyncio.wait_for(ready.wait(), args.load_timeout)
    load_s = time.monotonic() - started
    if state["status"] != "ready":
        raise SystemExit("model failed to load")

    uri = source.as_uri()
    lines = original.split("\n")
    answered: list[float] = []
    with_items: list[float] = []
    cancelled = 0
    version = 1
    rng = random.Random(args.seed)
    for target in targets:
        line = lines[target]
        indent = line[: len(line) - len(line.lstrip())]
        blanked = lines[:target] + [indent] + lines[target + 1:]
        version += 1
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri, "python", version, "\n".join(blanked))))
        col = len(indent)
        pending: tuple[asyncio.Future, float, str] | None = None
        for ch in line[len(indent):]:
            if pending is not None and not pending[0].done():
                client.protocol.notify("$/cancelRequest", types.CancelParams(id=pending[2]))
            version += 1
            sent = time.monotonic()
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(version=version, uri=uri),
                [types.TextDocumentContentChangePartial(
                    range=types.Range(types.Position(target, col), types.Position(target, col)), text=ch)]))
            col += 1
            msg_id = f"r{version}"
            future = asyncio.ensure_future(client.protocol.send_request_async(
                types.TEXT_DOCUMENT_INLINE_COMPLETION,
                types.InlineCompletionParams(
                    context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
                    text_document=types.TextDocumentIdentifier(uri), position=types.Position(target, col)),
                msg_id=msg_id))

            def record(fut: asyncio.Future, sent: float = sent) -> None:
                nonlocal cancelled
                if fut.cancelled() or fut.exception() is not None:
                    cancelled += 1
                    return
                elapsed = (time.monotonic() - sent) * 1000
                answered.append(elapsed)
                if fut.result() is not None and fut.result().items:
                    with_items.append(elapsed)

            future.add_done_callback(record)
            pending = (future, sent, msg_id)
            await asyncio.sleep(max(0.02, rng.gauss(args.gap_ms, args.gap_ms / 3)) / 1000)
        if pending is not None:  # the pause at the end of the line: let the last request finish
            try:
                await asyncio.wait_for(asyncio.shield(pending[0]), args.pause_timeout)
            except Exception:
                pass
        client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))
    await asyncio.sleep(0.2)
    result = await client.protocol.send_request_async("qwenLsp/stats", {})
    stats = result._asdict() if hasattr(result, "_asdict") else dict(result)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    requests = stats.get("requests", 0)
    return {
        "model": args.model, "file": str(source), "lines": len(targets), "keystrokes": version - 1 - len(targets),
        "load_s": round(load_s, 1),
        "answered": len(answered), "answered_with_items": len(with_items), "cancelled_by_client": cancelled,
        "p50_ms": percentile(answered, 0.5), "p90_ms": percentile(answered, 0.9),
        "p50_ms_with_items": percentile(with_items, 0.5), "p90_ms_with_items": percentile(with_items, 0.9),
        "mean_ms": statistics.fmean(answered) if answered else None,
        "cache_share": round(stats.get("cache_hits", 0) / requests, 3) if requests else None,
        "server_stats": stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model spec for the server")
    parser.add_argument("--file", default=str(REPO / "qwen_lsp" / "server" / "debounce.py"))
    parser.add_argument("--workspace", help="workspace root (default: the file's directory)")
    parser.add_argument("--lines", type=int, default=4)
    parser.add_argument("--gap-ms", type=float, default=150.0, help="mean time between keystrokes")
    parser.add_argument("--pause-timeout", type=float, default=120.0, help="longest wait at a line's end")
    parser.add_argument("--load-timeout", type=float, default=600.0)
    parser.add_argument("--time-budget-ms", type=int, default=3000)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--context-budget", type=int, default=944, help="prompt tokens in all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(replay(args)), indent=2))


if __name__ == "__main__":
    main()
