"""Bench prompts cut from a fixed code corpus to exact token counts (with the model's tokenizer)."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "code_corpus.txt"


def code_prompt(tokenizer, tokens: int) -> str:
    """The first `tokens` tokens of the corpus, as text."""
    return tokenizer.decode(_corpus_ids(tokenizer)[:tokens])


def fim_prompt(tokenizer, tokens: int) -> str:
    """A fill-in-the-middle prompt of about `tokens` tokens: two thirds prefix, one third suffix."""
    ids = _corpus_ids(tokenizer)
    start, prefix = len(ids) // 2, (tokens - 3) * 2 // 3
    suffix = tokens - 3 - prefix
    gap = start + prefix + 20
    return (f"<|fim_prefix|>{tokenizer.decode(ids[start:start + prefix])}"
            f"<|fim_suffix|>{tokenizer.decode(ids[gap:gap + suffix])}<|fim_middle|>")


def _corpus_ids(tokenizer) -> list[int]:
    return tokenizer.encode(CORPUS.read_text(encoding="utf-8"))
