"""Exact speculative decoding: drafters propose tokens, the target model verifies them in one pass.

Drafters: prompt lookup (n-grams of the prompt and the text so far), a small draft model that
shares the tokenizer, and the model's own multi-token-prediction head (qwen3_next). Verification
keeps the target's output unchanged: greedy accepts drafts that equal the target's argmax; sampling
uses standard rejection sampling (accept with min(1, p/q), else sample from max(0, p - q)
renormalised). KV of rejected drafts is dropped by truncation (a recurrent state is rebuilt at the
cut, see `HybridCache`). `DraftLength` picks how many tokens to draft from acceptance and costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .kv_cache import KVCache
from .model import QwenModel
from .mtp import MultiTokenPredictor
from .sampling import GenerationConfig, greedy_token, greedy_tokens, next_token_distribution


@dataclass
class Draft:
    """Proposed tokens and, for a sampling draft model, the distribution each was drawn from."""

    tokens: list[int]
    probs: list[torch.Tensor] | None = None  # None: deterministic proposals (point masses)


class Drafter(Protocol):
    def propose(self, context: list[int], k: int, config: GenerationConfig,
                generator: torch.Generator | None) -> Draft: ...


# Matches of 3 to 8 tokens (the longest wins): 2-token matches propose more wrong continuations.
# Simulated on the greedy outputs of two recorded typing sessions (0.5B), edits gained 1-8% over
# 2-4 at the same verification costs, fresh text 1-6%.
MIN_NGRAM, MAX_NGRAM = 3, 8


class NgramDrafter:
    """Prompt lookup: find the latest earlier occurrence of the context's last n tokens (longest n
    first) and propose the tokens that followed it.

    The index follows the context across requests: the next request's prompt mostly repeats this
    one's, so only the positions past their common prefix are dropped and indexed again (indexing a
    2,000-token prompt afresh takes ~8 ms of Python).

    A draft ends before any of `stop_ids` (the tokens that end generation): past one nothing is
    wanted, and the control tokens that frame a FIM prompt (<|file_sep|>, <|fim_middle|>) are
    rarely what the model says there, so each would cost a row of the verification pass."""

    def __init__(self, min_ngram: int = MIN_NGRAM, max_ngram: int = MAX_NGRAM, stop_ids: frozenset[int] = frozenset()):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError("need 1 <= min_ngram <= max_ngram")
        self.min_ngram, self.max_ngram = min_ngram, max_ngram
        self.stop_ids = stop_ids
        self._followers: dict[tuple[int, ...], list[int]] = {}  # n-gram -> positions after it, in order
        self._context: list[int] = []  # the context indexed (positions 1 .. len - 1)

    def propose(self, context: list[int], k: int, config: GenerationConfig | None = None,
                generator: torch.Generator | None = None) -> Draft:
        self._follow(context)
        for n in range(min(self.max_ngram, len(context)), self.min_ngram - 1, -1):
            follows = self._followers.get(tuple(context[-n:]))
            if follows:
                draft = context[follows[-1] : follows[-1] + k]
                return Draft(next((draft[:i] for i, t in enumerate(draft) if t in self.stop_ids), draft))
        return Draft([])

    def reset(self) -> None:
        self._followers.clear()
        self._context = []

    def _follow(self, context: list[int]) -> None:
        """Index `context`: keep the positions it shares with the last context, drop the others."""
        old = self._context
        common = len(old) if context[: len(old)] == old else common_prefix_length(old, context)
        keep = min(common, len(old) - 1, len(context) - 1)  # positions 1 .. keep stay
        for p in range(len(old) - 1, keep, -1):  # the last first: each is its n-grams' last position
            for n in range(self.min_ngram, min(self.max_ngram, p) + 1):
                key = tuple(old[p - n : p])
                self._followers[key].pop()
                if not self._followers[key]:
                    del self._followers[key]
        for p in range(max(keep + 1, 1), len(context)):
            for n in range(self.min_ngram, min(self.max_ngram, p) + 1):
                self._followers.setdefault(tuple(context[p - n : p]), []).append(p)
        self._context = list(context)


class DraftModelDrafter:
    """A smaller model with the same tokenizer proposes k tokens. Its cache follows the context,
    reusing the longest common prefix with what it saw last."""

    def __init__(self, model: QwenModel, max_context: int, prefill_chunk: int = 512):
        self.model = model
        self.cache: KVCache = model.new_cache(max_context)
        self.prefill_chunk = prefill_chunk
        self._ids: list[int] = []

    def propose(self, context: list[int], k: int, config: GenerationConfig,
                generator: torch.Generator | None = None) -> Draft:
        if k <= 0 or len(context) + k > self.cache.max_length:
            return Draft([])
        self.cache.truncate(min(common_prefix_length(self._ids, context), len(context) - 1))
        common = self.cache.length
        self._ids = list(context)
        for start in range(common, len(context), self.prefill_chunk):
            piece = torch.tensor(context[start : start + self.prefill_chunk])
            logits = self.model.forward(piece, self.cache, last_only=True, greedy=config.greedy)[-1]
        draft = Draft([], None if config.greedy else [])
        for i in range(k):
            if config.greedy:
                token = greedy_token(logits)
            else:
                q = next_token_distribution(logits, config, context + draft.tokens)
                token = int(torch.multinomial(q, 1, generator=generator))
                draft.probs.append(q)
            draft.tokens.append(token)
            if i + 1 < k:
                logits = self.model.forward(torch.tensor([token]), self.cache, last_only=True,
                                            greedy=config.greedy)[-1]
                self._ids.append(token)
        return draft

    def reset(self) -> None:
        self.cache.truncate(0)
        self._ids = []


class MTPDrafter:
    """Proposes tokens with the model's MTP head.

    It sees the target's final hidden states through `observe` (every forward pass of the target,
    with the tokens that pass ran over) and keeps the head's own keys/values for the context,
    reusing the longest prefix it shares with the last context across requests. Where the target
    skipped positions this drafter has no hidden states for (a prompt prefix served from the
    prefix cache), the head's context starts where the states begin: rotary attention depends only
    on relative positions, so the drafts stay well-formed, with less to look back on.
    """

    def __init__(self, model: QwenModel, max_context: int):
        if model.mtp is None:
            raise ValueError("the model has no MTP head")
        self.head: MultiTokenPredictor = model.mtp
        self.cache = self.head.new_cache(max_context, model.kv_dtype)
        self._ids: list[int] = []  # the context the head's entries were computed for
        self._origin = 0  # absolute position of the head's first entry
        self._rows: torch.Tensor | None = None  # target hidden states by absolute position
        self._rows_start = 0  # rows before this are not held
        self._row_ids: list[int] = []  # the tokens the held rows were computed for

    @property
    def context_start(self) -> int:
        """The absolute position the head's own context begins at (0 unless positions were skipped)."""
        return self._origin

    def observe(self, ids: list[int], start: int, hidden: torch.Tensor) -> None:
        """The target's final hidden states for positions [start, start + n), computed over `ids`."""
        end = start + hidden.shape[0]
        if common_prefix_length(self._row_ids, ids) < start or self._rows_start > start:
            self._rows_start = start  # the rows held before `start` belong to other tokens
        if self._rows is None or self._rows.shape[0] < end:
            grown = torch.empty(max(end, 2 * (0 if self._rows is None else self._rows.shape[0])), hidden.shape[1],
                                dtype=hidden.dtype)
            if self._rows is not None:
                grown[: self._rows.shape[0]] = self._rows
            self._rows = grown
        self._rows[start:end] = hidden
        self._row_ids = list(ids[:end])

    def propose(self, context: list[int], k: int, config: GenerationConfig,
                generator: torch.Generator | None = None) -> Draft:
        # Entry i (position i) reads h_i and token i+1: the context's real entries are 0 .. L-2.
        real_end = len(context) - 1
        rows_end = min(len(self._row_ids), common_prefix_length(self._row_ids, context))
        if k <= 0 or real_end < 1 or rows_end < real_end or real_end + k - self._origin > self.cache.max_length:
            return Draft([])
        valid = min(common_prefix_length(self._ids, context) - 1, real_end - 1)  # entries with unchanged inputs
        self.cache.truncate(max(0, valid - self._origin))
        have = self._origin + self.cache.length
        if self._rows_start > have:
            self.cache.truncate(0)
            self._origin = have = self._rows_start
        tokens = torch.tensor(context[have + 1 : real_end + 1], dtype=torch.long)
        out, logits = self.head.forward(self._rows[have:real_end], tokens, self.cache)
        out, logits = out[-1:], logits[-1]
        draft = Draft([], None if config.greedy else [])
        for i in range(k):
            if config.greedy:
                token = greedy_token(logits)
            else:
                q = next_token_distribution(logits, config, context + draft.tokens)
                token = int(torch.multinomial(q, 1, generator=generator))
                draft.probs.append(q)
            draft.tokens.append(token)
            if i + 1 < k:
                out, logits = self.head.forward(out, torch.tensor([token]), self.cache)
                logits = logits[-1]
        self.cache.truncate(real_end - self._origin)  # drop the drafted entries: they read no target state
        self._ids = list(context)
        return draft

    def reset(self) -> None:
        self.cache.truncate(0)
        self._ids, self._origin, self._rows, self._rows_start, self._row_ids = [], 0, None, 0, []


class DraftLength:
    """How many tokens to draft next: the length with the most expected tokens per second, from the
    chance that a drafted token is accepted (over recent steps) and the measured costs of a step: a
    pass of k + 1 rows verifies k drafts (on a CPU each row adds compute, so long drafts that are
    mostly rejected cost more than they save) and drafting itself (free for n-grams, a step of the
    draft model per token). The costs belong to the model and the machine: keep one across requests."""

    # Until measured: each extra row costs this share of a one-row pass (memory-bound decoding).
    PRIOR_ROW_SHARE = 0.1
    PRIOR_ACCEPTANCE = 0.7
    # While drafting nothing (length 0), the acceptance estimate creeps back toward the prior by this
    # share per step, so drafting is tried again now and then (the text may have turned repetitive).
    RETRY_DRIFT = 0.05

    def __init__(self, initial: int = 4, minimum: int = 1, maximum: int = 16, memory: float = 0.7,
                 timed: bool = True):
        self.minimum, self.maximum, self.memory = minimum, maximum, memory
        self.timed = timed  # False: the prior costs stand, so the lengths depend on acceptance alone
        self.current = max(minimum, min(initial, maximum))
        self.acceptance = self.PRIOR_ACCEPTANCE  # chance that one drafted token is accepted
        self.pass_s: float | None = None  # seconds of a one-row pass
        self.row_s: float | None = None  # seconds each further row adds
        self.draft_s = 0.0  # seconds of drafting per drafted token
        self._one_row_seen = False

    def observe(self, drafted: int, drafting_s: float, pass_s: float) -> None:
        """One step: `drafted` tokens proposed in `drafting_s` seconds, then a pass of drafted + 1 rows."""
        if not self.timed:
            return
        if drafted == 0:
            self.pass_s = self._mix(self.pass_s if self._one_row_seen else None, pass_s)
            self._one_row_seen = True
        elif self._one_row_seen:
            self.row_s = self._mix(self.row_s, max(0.0, pass_s - self.pass_s) / drafted)
        else:  # no one-row pass yet: split this one by the prior share
            self.pass_s = pass_s / (1 + self.PRIOR_ROW_SHARE * drafted)
        if drafted:
            self.draft_s = self._mix(self.draft_s, drafting_s / drafted)
        self.current = self._best()

    def update(self, proposed: int, accepted: int) -> None:
        """A draft of `proposed` tokens (maybe none) had its first `accepted` accepted."""
        if proposed == 0:
            if self.current == 0:
                self.acceptance += self.RETRY_DRIFT * (self.PRIOR_ACCEPTANCE - self.acceptance)
                self.current = self._best()
            return
        # A draft is a run of accepted tokens ended by one rejection, unless all were accepted.
        rate = accepted / (accepted + (accepted < proposed))
        self.acceptance = self._mix(self.acceptance, rate)
        self.current = self._best()

    def expected_tokens_per_s(self, k: int) -> float:
        """Tokens a step with k drafts yields (the accepted ones and the target's own), per second."""
        a = min(self.acceptance, 0.999)
        pass_s = self.pass_s or 1.0
        row_s = self.row_s if self.row_s is not None else self.PRIOR_ROW_SHARE * pass_s
        return (1 - a ** (k + 1)) / (1 - a) / (pass_s + k * (row_s + self.draft_s))

    def _best(self) -> int:
        return max(range(self.minimum, self.maximum + 1), key=self.expected_tokens_per_s)

    def _mix(self, old: float | None, new: float) -> float:
        return new if old is None else self.memory * old + (1 - self.memory) * new


def verify_greedy(logits: torch.Tensor, drafts: list[int]) -> tuple[int, int]:
    """logits[i] follows drafts[:i]. Returns (accepted drafts, the target's next token after them)."""
    predicted = greedy_tokens(logits)
    accepted = 0
    while accepted < len(drafts) and drafts[accepted] == predicted[accepted]:
        accepted += 1
    return accepted, predicted[accepted]


def verify_sampling(logits: torch.Tensor, draft: Draft, config: GenerationConfig, previous: list[int],
                    generator: torch.Generator | None) -> tuple[int, int]:
    """Rejection sampling: the returned tokens are distributed exactly as sampling the target."""
    for i, token in enumerate(draft.tokens):
        p = next_token_distribution(logits[i], config, previous + draft.tokens[:i])
        q = _point_mass(token, p) if draft.probs is None else draft.probs[i]
        if float(torch.rand((), generator=generator)) * float(q[token]) < float(p[token]):
            continue
        residual = torch.clamp(p - q, min=0)
        if float(residual.sum()) <= 0:
            residual = p
        return i, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))
    p = next_token_distribution(logits[len(draft.tokens)], config, previous + draft.tokens)
    return len(draft.tokens), int(torch.multinomial(p, 1, generator=generator))


def _point_mass(token: int, like: torch.Tensor) -> torch.Tensor:
    q = torch.zeros_like(like)
    q[token] = 1.0
    return q


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading token ids `a` and `b` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
