"""A scripted stand-in for ``inference.load_model`` used by the server's mechanics tests.

The spec ``fake?text=...&delay_ms=...&load_s=...&fail=...`` yields a model that "generates"
``text`` one character per token, ``delay_ms`` per token, honouring ``should_stop``; it counts
its calls in the file named by ``calls`` (when given) so tests can see model use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

SPECIALS = {"<|fim_prefix|>": 1, "<|fim_suffix|>": 2, "<|fim_middle|>": 3, "<|endoftext|>": 0}


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0
    stop_strings: tuple = ()


@dataclass
class GenerationResult:
    text: str
    token_ids: list
    prompt_tokens: int
    ttft_ms: float
    decode_tokens_per_s: float
    stop_reason: str
    total_ms: float


class FakeTokenizer:
    def encode(self, text: str, parse_special: bool = False) -> list[int]:
        return [ord(c) + 16 for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i - 16) for i in ids if i >= 16)

    def token_id(self, token: str) -> int:
        return SPECIALS.get(token)


class FakeLM:
    def __init__(self, text: str, delay_s: float, calls_file: str | None) -> None:
        self.tokenizer = FakeTokenizer()
        self.text, self.delay_s, self.calls_file = text, delay_s, calls_file

    def generate(self, prompt_ids, config, on_token=None, should_stop=None) -> GenerationResult:
        start = time.monotonic()
        if self.calls_file:
            with open(self.calls_file, "a") as f:
                f.write("call\n")
        out, reason = [], "length"
        for ch in self.text[: config.max_new_tokens]:
            if should_stop is not None and should_stop():
                reason = "cancelled"
                break
            time.sleep(self.delay_s)
            out.append(ch)
            if on_token:
                on_token(ord(ch) + 16, ch)
        else:
            reason = "eos"
        text = "".join(out)
        for stop in config.stop_strings:
            if stop in text:
                text, reason = text[: text.index(stop)], "stop"
        total = (time.monotonic() - start) * 1000
        if self.calls_file:
            with open(self.calls_file, "a") as f:
                f.write(f"end {reason} {len(out)}\n")
        return GenerationResult(text, [ord(c) + 16 for c in text], len(prompt_ids), self.delay_s * 1000, 0.0, reason, total)


def load_model(spec: str, **options) -> FakeLM:
    from inference import GenerationConfig  # noqa: F401  (the real loader imports the runtime too)

    query = {k: v[-1] for k, v in parse_qs(urlsplit(spec).query).items()}
    time.sleep(float(query.get("load_s", 0)))
    if query.get("fail"):
        raise FileNotFoundError(f"no such model: {spec}")
    return FakeLM(query.get("text", "hello_world(1, 2)"), float(query.get("delay_ms", 5)) / 1000, query.get("calls"))
