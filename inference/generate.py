"""The decode loop: chunked prefill, then token by token with streaming, stops and cancellation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .hybrid_cache import HybridCache
from .kv_cache import KVCache
from .model import OnHidden, QwenModel
from .sampling import GenerationConfig, choose_token
from .speculative import Draft, Drafter, DraftLength, verify_greedy, verify_sampling
from .tokenizer import Tokenizer

OnToken = Callable[[int, str], None]
ShouldStop = Callable[[], bool]


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    stop_reason: str  # "stop_token" | "stop_string" | "max_tokens" | "cancelled" | "time_budget"
    ttft_ms: float | None = None
    prefill_ms: float = 0.0
    total_ms: float = 0.0
    decode_tokens_per_s: float | None = None
    timings: dict = field(default_factory=dict)


def prefill(model: QwenModel, cache: KVCache, ids: list[int], chunk: int,
            should_stop: ShouldStop | None = None, snapshot_at: tuple[int, ...] = (),
            on_hidden: OnHidden | None = None, greedy: bool = False) -> torch.Tensor | None:
    """Run `ids` after the cache's contents in chunks; logits of the last token, or None if cancelled.

    `should_stop` is polled before every chunk; the chunks computed before a stop stay in the
    cache. A recurrent cache
    (`HybridCache`) is cut at every multiple of `chunk`, at the positions `snapshot_at` and before
    the last token, and snapshotted after each piece: the points a later request sharing the
    prefix resumes from. `on_hidden` receives every piece's final hidden states (`QwenModel.forward`).
    With `greedy` the logits are only good for their argmax (`QwenModel.forward`).
    """
    start, end = cache.length, cache.length + len(ids)
    recurrent = isinstance(cache, HybridCache)
    if recurrent:
        wanted = {*range((start // chunk + 1) * chunk, end, chunk), *snapshot_at, end - 1, end}
        cuts = sorted(p for p in wanted if start < p <= end)
    else:
        cuts = [*range(start + chunk, end, chunk), end]
    logits = None
    for cut in cuts:
        if should_stop is not None and should_stop():
            return None
        piece = torch.tensor(ids[cache.length - start : cut - start], dtype=torch.long)
        logits = model.forward(piece, cache, last_only=True, on_hidden=on_hidden, greedy=greedy)[-1]
        if recurrent:
            cache.snapshot()
    return logits


def rewind(model: QwenModel, cache: KVCache, ids: list[int], length: int, chunk: int,
           on_hidden: OnHidden | None = None) -> None:
    """Cut the cache (which holds a prefix of `ids`) back to `length` tokens, recomputing whatever a
    recurrent cache could not keep."""
    cache.truncate(length)
    if cache.length < length:
        prefill(model, cache, ids[cache.length : length], chunk, on_hidden=on_hidden)


def generate(model: QwenModel, tokenizer: Tokenizer, prompt_ids: list[int], config: GenerationConfig,
             cache: KVCache, on_token: OnToken | None = None, should_stop: ShouldStop | None = None, *,
             drafter: Drafter | None = None, draft_length: DraftLength | None = None,
             deadline: float | None = None) -> GenerationResult:
    """Generate after `prompt_ids`; the cache must be empty or hold a prefix of the prompt.

    With a `drafter`, each step verifies the drafted tokens in one forward pass (exact: see
    `speculative`). Past `deadline` (a `time.perf_counter()` value) generation ends at the next
    newline that follows some text, like llama.vim's t_max_predict_ms: the prompt is always finished (only cancellation
    stops a prefill), so a budget spent in the prefill still answers the first line. On return the
    cache holds KV for a prefix of prompt + generated tokens (the chunks prefilled so far, when
    cancelled).
    """
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
    generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
    draft_length = draft_length or DraftLength()
    most_drafts = model.exact_pass_tokens - 1  # a verification pass computes what decoding computes

    started = time.perf_counter()
    cache.truncate(min(cache.length, len(prompt_ids) - 1))
    reused = cache.length
    result = GenerationResult(text="", token_ids=[], prompt_tokens=len(prompt_ids), stop_reason="max_tokens")
    result.timings.update(drafted_tokens=0, accepted_tokens=0, verify_steps=0)
    logits = prefill(model, cache, prompt_ids[reused:], config.prefill_chunk, should_stop, config.snapshot_at,
                     _hidden_observer(drafter, prompt_ids), config.greedy)
    result.prefill_ms = (time.perf_counter() - started) * 1000
    if logits is None or config.max_new_tokens == 0:
        result.stop_reason = "max_tokens" if logits is not None else "cancelled"
        result.total_ms = result.prefill_ms
        return result

    emit = _Emitter(tokenizer, config, result, on_token, deadline)
    token = choose_token(logits, config, prompt_ids, generator)
    first_token_at = time.perf_counter()
    result.ttft_ms = (first_token_at - started) * 1000
    done = emit(token)
    while not done:
        if should_stop is not None and should_stop():
            result.stop_reason = "cancelled"
            break
        context = prompt_ids + result.token_ids
        room = config.max_new_tokens - len(result.token_ids) - 1
        step_started = time.perf_counter()
        draft = drafter.propose(context, min(draft_length.current, room, most_drafts), config, generator) \
            if drafter is not None and room > 0 else Draft([])
        drafted = time.perf_counter()
        base = cache.length
        observe = _hidden_observer(drafter, context + draft.tokens)
        logits = model.forward(torch.tensor([token] + draft.tokens, dtype=torch.long), cache,
                               last_only=not draft.tokens, on_hidden=observe, greedy=config.greedy)
        draft_length.observe(len(draft.tokens), drafted - step_started, time.perf_counter() - drafted)
        if not draft.tokens:
            accepted, token = 0, choose_token(logits[-1], config, context, generator)
        elif config.greedy:
            accepted, token = verify_greedy(logits, draft.tokens)
        else:
            accepted, token = verify_sampling(logits, draft, config, context, generator)
        draft_length.update(len(draft.tokens), accepted)
        if draft.tokens:
            rewind(model, cache, context + draft.tokens, base + 1 + accepted, config.prefill_chunk, observe)
            result.timings["verify_steps"] += 1
            result.timings["drafted_tokens"] += len(draft.tokens)
            result.timings["accepted_tokens"] += accepted
        for accepted_token in draft.tokens[:accepted] + [token]:
            done = emit(accepted_token)
            if done:
                break

    cache.truncate(len(prompt_ids) + len(result.token_ids))
    finished = time.perf_counter()
    result.total_ms = (finished - started) * 1000
    if len(result.token_ids) > 1:
        result.decode_tokens_per_s = (len(result.token_ids) - 1) / max(finished - first_token_at, 1e-9)
    return result


def _hidden_observer(drafter: Drafter | None, ids: list[int]) -> OnHidden | None:
    """The target's hidden states over `ids` for a drafter that reads them (`MTPDrafter.observe`)."""
    observe = getattr(drafter, "observe", None)
    return None if observe is None else lambda start, hidden: observe(ids, start, hidden)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() >= deadline


class _Emitter:
    """Hands one chosen token to the result and the caller; says whether generation is over."""

    def __init__(self, tokenizer: Tokenizer, config: GenerationConfig, result: GenerationResult,
                 on_token: OnToken | None, deadline: float | None):
        self.stop_ids = tokenizer.stop_ids if config.stop_ids is None else config.stop_ids
        self.decoder = tokenizer.stream_decoder()
        self.config, self.result, self.on_token, self.deadline = config, result, on_token, deadline

    def __call__(self, token: int) -> bool:
        result = self.result
        if token in self.stop_ids:
            result.stop_reason = "stop_token"
            return True
        result.token_ids.append(token)
        piece = self.decoder.step(token)
        result.text += piece
        if self.on_token is not None:
            self.on_token(token, piece)
        if self.config.stop_strings and _cut_at_stop_string(result, self.config.stop_strings):
            return True
        if len(result.token_ids) >= self.config.max_new_tokens:
            result.stop_reason = "max_tokens"
            return True
        if "\n" in piece and result.text.strip() and _past(self.deadline):
            result.stop_reason = "time_budget"
            return True
        return False


def _cut_at_stop_string(result: GenerationResult, stop_strings: tuple[str, ...]) -> bool:
    hits = [i for i in (result.text.find(s) for s in stop_strings if s) if i >= 0]
    if not hits:
        return False
    result.text = result.text[: min(hits)]
    result.stop_reason = "stop_string"
    return True
