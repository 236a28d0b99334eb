"""The decode loop: chunked prefill, then token by token with streaming, stops and cancellation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .kv_cache import KVCache
from .model import QwenModel
from .sampling import GenerationConfig, choose_token
from .tokenizer import Tokenizer

OnToken = Callable[[int, str], None]
ShouldStop = Callable[[], bool]


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    stop_reason: str  # "stop_token" | "stop_string" | "max_tokens" | "cancelled"
    ttft_ms: float | None = None
    prefill_ms: float = 0.0
    total_ms: float = 0.0
    decode_tokens_per_s: float | None = None
    timings: dict = field(default_factory=dict)


def prefill(model: QwenModel, cache: KVCache, ids: list[int], chunk: int,
            should_stop: ShouldStop | None = None) -> torch.Tensor | None:
    """Run `ids` after the cache's contents in chunks; logits of the last token, or None if cancelled."""
    logits = None
    for start in range(0, len(ids), chunk):
        if should_stop is not None and should_stop():
            return None
        piece = torch.tensor(ids[start : start + chunk], dtype=torch.long)
        logits = model.forward(piece, cache, last_only=True)[-1]
    return logits


def generate(model: QwenModel, tokenizer: Tokenizer, prompt_ids: list[int], config: GenerationConfig,
             cache: KVCache, on_token: OnToken | None = None,
             should_stop: ShouldStop | None = None) -> GenerationResult:
    """Generate after `prompt_ids`; the cache must be empty or hold a prefix of the prompt."""
    if not prompt_ids:
        raise ValueError("the prompt is empty")
    vocab = model.config.vocab_size
    bad = [i for i in prompt_ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(f"prompt has token ids outside the vocabulary [0, {vocab}): {bad[:5]}")
    needed = len(prompt_ids) + config.max_new_tokens
    if needed > cache.max_length:
        raise ValueError(
            f"prompt ({len(prompt_ids)} tokens) plus max_new_tokens ({config.max_new_tokens}) "
            f"exceeds the context length {cache.max_length}"
        )
    stop_ids = tokenizer.stop_ids if config.stop_ids is None else config.stop_ids
    generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None

    started = time.perf_counter()
    reused = min(cache.length, len(prompt_ids) - 1)
    cache.truncate(reused)
    result = GenerationResult(text="", token_ids=[], prompt_tokens=len(prompt_ids), stop_reason="max_tokens")
    logits = prefill(model, cache, prompt_ids[reused:], config.prefill_chunk, should_stop)
    result.prefill_ms = (time.perf_counter() - started) * 1000
    if logits is None:
        result.stop_reason = "cancelled"
        result.total_ms = result.prefill_ms
        return result

    decoder = tokenizer.stream_decoder()
    first_token_at = None
    while len(result.token_ids) < config.max_new_tokens:
        token = choose_token(logits, config, prompt_ids + result.token_ids, generator)
        if first_token_at is None:
            first_token_at = time.perf_counter()
            result.ttft_ms = (first_token_at - started) * 1000
        if token in stop_ids:
            result.stop_reason = "stop_token"
            break
        result.token_ids.append(token)
        piece = decoder.step(token)
        result.text += piece
        if on_token is not None:
            on_token(token, piece)
        if config.stop_strings and _cut_at_stop_string(result, config.stop_strings):
            break
        if len(result.token_ids) == config.max_new_tokens:
            break
        if should_stop is not None and should_stop():
            result.stop_reason = "cancelled"
            break
        logits = model.forward(torch.tensor([token], dtype=torch.long), cache, last_only=True)[-1]

    finished = time.perf_counter()
    result.total_ms = (finished - started) * 1000
    if first_token_at is not None and len(result.token_ids) > 1:
        result.decode_tokens_per_s = (len(result.token_ids) - 1) / max(finished - first_token_at, 1e-9)
    return result


def _cut_at_stop_string(result: GenerationResult, stop_strings: tuple[str, ...]) -> bool:
    hits = [i for i in (result.text.find(s) for s in stop_strings if s) if i >= 0]
    if not hits:
        return False
    result.text = result.text[: min(hits)]
    result.stop_reason = "stop_string"
    return True
