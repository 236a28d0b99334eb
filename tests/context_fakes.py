"""Test doubles for the runtime contract: a word-level tokenizer and a scripted model."""

from __future__ import annotations

import re
from dataclasses import dataclass

SPECIALS = ("<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
            "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>")
_PIECE = re.compile(r"\w+|\s+|.", re.S)


class FakeTokenizer:
    """Words, runs of whitespace and single symbols are tokens; specials only when parsed."""

    def __init__(self, specials=SPECIALS) -> None:
        self.vocab = {name: i for i, name in enumerate(specials)}
        self.specials = set(specials)
        self.inverse = dict(enumerate(specials))

    def _id(self, piece: str) -> int:
        if piece not in self.vocab or piece in self.specials:
            key = piece if piece not in self.specials else "\0" + piece
            if key not in self.vocab:
                self.vocab[key] = len(self.vocab)
                self.inverse[self.vocab[key]] = piece
            return self.vocab[key]
        return self.vocab[piece]

    def encode(self, text: str, parse_special: bool = False) -> list[int]:
        ids = []
        if parse_special:
            parts = re.split("(" + "|".join(re.escape(s) for s in self.specials) + ")", text)
        else:
            parts = [text]
        for part in parts:
            if parse_special and part in self.specials:
                ids.append(self.vocab[part])
            else:
                ids.extend(self._id(p) for p in _PIECE.findall(part))
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self.inverse[i] for i in ids)

    def token_id(self, name: str) -> int | None:
        return self.vocab.get(name) if name in self.specials else None


@dataclass
class FakeResult:
    text: str
    token_ids: list
    prompt_tokens: int
    ttft_ms: float = 1.0
    decode_tokens_per_s: float = 100.0
    stop_reason: str = "eos"
    total_ms: float = 2.0


class FakeModel:
    """Answers every prompt with a fixed continuation (or one computed from the prompt)."""

    def __init__(self, reply="pass", specials=SPECIALS) -> None:
        self.tokenizer = FakeTokenizer(specials)
        self.reply = reply
        self.prompts: list[list[int]] = []
        self.stop_reasons: list[str] = []

    def generate(self, prompt_ids, config, on_token=None, should_stop=None, request_key=None, time_budget_ms=None):
        self.prompts.append(list(prompt_ids))
        reply = self.reply(self.tokenizer.decode(prompt_ids)) if callable(self.reply) else self.reply
        text, reason = "", "eos"
        for piece in _PIECE.findall(reply):  # streamed like a runtime: stop strings, then polls
            text += piece
            if on_token is not None:
                on_token(0, piece)
            hits = [text.find(s) for s in config.stop_strings if s in text]
            if hits:
                text, reason = text[: min(hits)], "stop_string"
                break
            if should_stop is not None and should_stop():
                reason = "cancelled"
                break
        self.stop_reasons.append(reason)
        return FakeResult(text, [], len(prompt_ids), stop_reason=reason)


@dataclass
class FakeGenerationConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0
    stop_strings: tuple = ()


def ensure_generation_config(monkeypatch) -> None:
    """Give ``inference`` a GenerationConfig while the runtime is not merged in."""
    import inference

    if not hasattr(inference, "GenerationConfig"):
        monkeypatch.setattr(inference, "GenerationConfig", FakeGenerationConfig, raising=False)
