"""The remote engine against a real HTTP server on loopback that speaks `/v1/completions`."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inference import GenerationConfig, load_model
from inference.remote import RemoteModel, RemoteModelError

PIECES = ["    return", " a", " +", " b\n", "\n", "def", " sub"]


class CompletionServer:
    """A tiny OpenAI-compatible completion server: streams PIECES (cut at max_tokens and stops)."""

    def __init__(self, delay_s: float = 0.0, status: int = 200):
        self.received: list[dict] = []
        self.delay_s, self.status = delay_s, status
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.received.append(dict(body, path=self.path))
                if server.status != 200:
                    self.send_response(server.status)
                    self.end_headers()
                    self.wfile.write(b'{"error": "model not loaded"}')
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                text, finish = "", "length"
                for piece in PIECES[: body["max_tokens"]]:
                    if any(stop in text + piece for stop in body["stop"]):
                        finish = "stop"
                        break
                    time.sleep(server.delay_s)
                    text += piece
                    self._event({"choices": [{"text": piece, "index": 0, "finish_reason": None}]})
                self._event({"choices": [{"text": "", "index": 0, "finish_reason": finish}]})
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, payload):
                try:
                    self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_model(tiny_model_dir("qwen2")).tokenizer


@pytest.fixture
def server():
    s = CompletionServer()
    yield s
    s.close()


FIM = "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n<|fim_middle|>"


def test_sends_the_raw_fim_prompt_and_stops_and_streams_the_answer(tokenizer, server):
    remote = RemoteModel(server.url, "qwen3-coder", tokenizer)
    pieces = []
    config = GenerationConfig(max_new_tokens=16, stop_strings=("\n\n",))
    result = remote.generate(tokenizer.encode(FIM, parse_special=True), config,
                             on_token=lambda token, piece: pieces.append(piece))
    sent = server.received[0]
    assert sent["path"] == "/v1/completions" and sent["model"] == "qwen3-coder"
    assert sent["prompt"] == FIM and sent["max_tokens"] == 16 and sent["stream"] is True
    assert {"\n\n", "<|endoftext|>", "<|file_sep|>", "<|fim_prefix|>"} <= set(sent["stop"])
    assert result.text == "    return a + b\n" == "".join(pieces)
    assert result.stop_reason == "stop_string" and result.token_ids == tokenizer.encode(result.text)
    assert result.ttft_ms is not None


def test_max_tokens_is_reported(tokenizer, server):
    result = RemoteModel(server.url, "m", tokenizer).generate(tokenizer.encode("x"), GenerationConfig(max_new_tokens=2))
    assert (result.text, result.stop_reason) == ("    return a", "max_tokens")


def test_cancellation_and_preemption_close_the_stream(tokenizer):
    slow = CompletionServer(delay_s=0.05)
    try:
        remote = RemoteModel(slow.url, "m", tokenizer)
        seen = []
        result = remote.generate(tokenizer.encode("x"), GenerationConfig(max_new_tokens=16),
                                 on_token=lambda t, p: seen.append(p), should_stop=lambda: len(seen) >= 2)
        assert result.stop_reason == "cancelled" and len(seen) == 2
        newer = []

        def on_token(token, piece):
            seen.append(piece)
            if not newer:
                newer.append(remote.generate(tokenizer.encode("y"), GenerationConfig(max_new_tokens=1),
                                             request_key="doc.py"))

        stale = remote.generate(tokenizer.encode("x"), GenerationConfig(max_new_tokens=16), request_key="doc.py",
                                on_token=on_token)
        assert stale.stop_reason == "cancelled" and stale.text == "    return"
        assert newer[0].stop_reason == "max_tokens"
    finally:
        slow.close()


def test_time_budget_stops_at_the_next_newline(tokenizer, server):
    result = RemoteModel(server.url, "m", tokenizer).generate(
        tokenizer.encode("x"), GenerationConfig(max_new_tokens=16), time_budget_ms=0)
    assert (result.text, result.stop_reason) == ("    return a + b\n", "time_budget")


def test_unreachable_server_gives_a_clear_error(tokenizer):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RemoteModelError, match=f"cannot reach the completion server at http://127.0.0.1:{port}"):
        RemoteModel(f"http://127.0.0.1:{port}", "m", tokenizer, timeout_s=2).generate(tokenizer.encode("x"))


def test_slow_server_times_out(tokenizer):
    slow = CompletionServer(delay_s=1.0)
    try:
        with pytest.raises(RemoteModelError, match="timed out after 0.2s"):
            RemoteModel(slow.url, "m", tokenizer, timeout_s=0.2).generate(tokenizer.encode("x"))
    finally:
        slow.close()


def test_server_errors_are_reported(tokenizer):
    failing = CompletionServer(status=503)
    try:
        with pytest.raises(RemoteModelError, match="answered 503: .*model not loaded"):
            RemoteModel(failing.url, "m", tokenizer).generate(tokenizer.encode("x"))
    finally:
        failing.close()
