"""The engine interface backed by an OpenAI-compatible `/v1/completions` server (vLLM, SGLang,
llama-server): for models larger than one machine.

The same raw FIM prompt (the local tokenizer turns ids back into text, control tokens spelled out)
and the same stops are sent; tokens stream back as server-sent events. Preemption by request key,
`should_stop` and the time budget work as in the local engine, by closing the stream. Token ids in
the result are the local tokenizer's encoding of the returned text.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse

from .errors import ModelError
from .generate import GenerationResult, OnToken, ShouldStop
from .preemption import LatestByKey, either
from .sampling import GenerationConfig
from .tokenizer import Tokenizer


class RemoteModelError(ModelError):
    """The completion server is unreachable, too slow, or answered with an error."""


class RemoteModel:
    """`generate(prompt_ids, config, ...)` like `LanguageModel`, run by a remote server."""

    def __init__(self, base_url: str, model: str, tokenizer: Tokenizer, *, timeout_s: float = 30.0,
                 context_length: int = 32768, api_key: str | None = None):
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url, self.model, self.tokenizer = base_url.rstrip("/"), model, tokenizer
        self.timeout_s, self.context_length, self._api_key = timeout_s, context_length, api_key
        self._url = url
        self._requests = LatestByKey()

    def generate(self, prompt_ids: list[int], config: GenerationConfig | None = None, *,
                 on_token: OnToken | None = None, should_stop: ShouldStop | None = None,
                 request_key: object = None, time_budget_ms: float | None = None) -> GenerationResult:
        config = config or GenerationConfig()
        ticket, stale = self._requests.register(request_key)
        try:
            return self._complete(prompt_ids, config, on_token, either(stale, should_stop), time_budget_ms)
        finally:
            self._requests.release(request_key, ticket)

    def _body(self, prompt_ids: list[int], config: GenerationConfig) -> dict:
        stop_ids = self.tokenizer.stop_ids if config.stop_ids is None else config.stop_ids
        stops = sorted({self.tokenizer.decode([i]) for i in stop_ids} | set(config.stop_strings))
        body = dict(model=self.model, prompt=self.tokenizer.decode(prompt_ids), max_tokens=config.max_new_tokens,
                    temperature=config.temperature, stop=stops, stream=True)
        if not config.greedy:
            body.update(top_p=config.top_p, top_k=config.top_k, repetition_penalty=config.repetition_penalty)
        if config.seed is not None:
            body["seed"] = config.seed
        return body

    def _complete(self, prompt_ids: list[int], config: GenerationConfig, on_token: OnToken | None,
                  should_stop: ShouldStop, time_budget_ms: float | None) -> GenerationResult:
        started = time.perf_counter()
        result = GenerationResult("", [], len(prompt_ids), "max_tokens")
        if should_stop():
            result.stop_reason = "cancelled"
            return result
        deadline = None if time_budget_ms is None else started + time_budget_ms / 1000
        connection = self._connect()
        try:
            response = self._post(connection, self._body(prompt_ids, config))
            for event in _server_sent_events(response, self.base_url):
                choice = (event.get("choices") or [{}])[0]
                piece = choice.get("text") or ""
                if piece:
                    if result.ttft_ms is None:
                        result.ttft_ms = (time.perf_counter() - started) * 1000
                    result.text += piece
                    if on_token is not None:
                        on_token(-1, piece)
                if choice.get("finish_reason"):
                    result.stop_reason = "max_tokens" if choice["finish_reason"] == "length" else "stop_string"
                    break
                if should_stop():
                    result.stop_reason = "cancelled"
                    break
                if deadline is not None and "\n" in piece and time.perf_counter() >= deadline:
                    result.stop_reason = "time_budget"
                    break
        except (TimeoutError, socket.timeout) as exc:
            raise RemoteModelError(f"the completion server at {self.base_url} timed out after {self.timeout_s}s") \
                from exc
        except OSError as exc:
            raise RemoteModelError(f"cannot reach the completion server at {self.base_url}: {exc}") from exc
        finally:
            connection.close()
        result.token_ids = self.tokenizer.encode(result.text) if result.text else []
        result.total_ms = (time.perf_counter() - started) * 1000
        return result

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._url.scheme == "https" else http.client.HTTPConnection
        return kind(self._url.hostname, self._url.port, timeout=self.timeout_s)

    def _post(self, connection: http.client.HTTPConnection, body: dict) -> http.client.HTTPResponse:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        connection.request("POST", self._url.path.rstrip("/") + "/v1/completions", json.dumps(body), headers)
        response = connection.getresponse()
        if response.status != 200:
            detail = response.read(500).decode("utf-8", "replace")
            raise RemoteModelError(f"the completion server at {self.base_url} answered {response.status}: {detail}")
        return response


def _server_sent_events(response: http.client.HTTPResponse, where: str):
    """JSON payloads of `data:` lines until `data: [DONE]` (a non-streaming JSON body is one event)."""
    if not response.getheader("Content-Type", "").startswith("text/event-stream"):
        yield _json(response.read().decode("utf-8"), where)
        return
    for raw in response:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield _json(data, where)


def _json(text: str, where: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RemoteModelError(f"the completion server at {where} sent something that is not JSON: {text[:200]!r}") \
            from exc
