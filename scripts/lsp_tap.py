"""Sits between an editor and qwen-lsp on stdio and records each inline completion as the server saw it.

Passes every message through unchanged. For each ``textDocument/inlineCompletion`` answer it appends
one JSON line to LOG: the server's milliseconds, the number of items, and the server's counters
(``qwenLsp/stats``, asked right after the answer, answered to the tap alone), so a reader can tell
cache hits from model calls. Usage: ``python scripts/lsp_tap.py LOG SERVER_COMMAND...``
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

INLINE = "textDocument/inlineCompletion"
STATS = "qwenLsp/stats"


async def read_message(reader: asyncio.StreamReader) -> bytes | None:
    """One framed LSP message (headers and body), or None at end of stream."""
    headers = b""
    while not headers.endswith(b"\r\n\r\n"):
        line = await reader.readline()
        if not line:
            return None
        headers += line
    length = next(int(h.split(b":")[1]) for h in headers.split(b"\r\n") if h.lower().startswith(b"content-length"))
    return headers + await reader.readexactly(length)


def frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def body_of(message: bytes) -> dict:
    return json.loads(message.split(b"\r\n\r\n", 1)[1])


class Tap:
    def __init__(self, log: Path, server: asyncio.subprocess.Process, editor_out: asyncio.StreamWriter):
        self.log, self.server, self.editor_out = log, server, editor_out
        self.asked: dict[object, float] = {}  # inline request id -> when the editor sent it
        self.answers: dict[str, dict] = {}  # stats request id -> the answer record it completes

    async def from_editor(self, reader: asyncio.StreamReader) -> None:
        while (message := await read_message(reader)) is not None:
            body = body_of(message)
            if body.get("method") == INLINE:
                self.asked[body["id"]] = time.monotonic()
            self.server.stdin.write(message)
            await self.server.stdin.drain()
        self.server.stdin.close()

    async def from_server(self) -> None:
        while (message := await read_message(self.server.stdout)) is not None:
            body = body_of(message)
            record = self.answers.pop(str(body.get("id")), None) if "method" not in body else None
            if record is not None:
                self.write(record | {"stats": body.get("result")})
                continue
            self.editor_out.write(message)
            await self.editor_out.drain()
            if "method" not in body and body.get("id") in self.asked:
                self.ask_stats(body)

    def ask_stats(self, answer: dict) -> None:
        result = answer.get("result")
        items = result.get("items", []) if isinstance(result, dict) else result or []
        stats_id = f"tap-{answer['id']}-{time.monotonic_ns()}"
        self.answers[stats_id] = {"at": time.time(), "items": len(items), "error": "error" in answer,
                                  "ms": (time.monotonic() - self.asked.pop(answer["id"])) * 1000}
        self.server.stdin.write(frame({"jsonrpc": "2.0", "id": stats_id, "method": STATS, "params": {}}))

    def write(self, record: dict) -> None:
        with self.log.open("a") as log:
            log.write(json.dumps(record) + "\n")


async def main(log: Path, command: list[str]) -> int:
    loop = asyncio.get_running_loop()
    editor_in = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(editor_in), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    editor_out = asyncio.StreamWriter(transport, protocol, None, loop)
    server = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE,
                                                  stdout=asyncio.subprocess.PIPE)
    tap = Tap(log, server, editor_out)
    editor = asyncio.ensure_future(tap.from_editor(editor_in))
    await tap.from_server()
    editor.cancel()
    return await server.wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]), sys.argv[2:])))
