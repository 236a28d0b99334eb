"""One model, many callers: prefix reuse, speculation, preemption, time budgets and streaming.

Requests run one at a time on a worker thread. A request carrying a `request_key` (say, the
document URI) is preempted by any newer request with the same key: it stops at the next token
boundary, or never starts if it is still waiting. Memory is bounded by the working caches (at most
the context length each) and the prefix cache's budget.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .generate import GenerationResult, OnToken, ShouldStop, generate
from .hybrid_cache import HybridCache
from .model import QwenModel
from .preemption import LatestByKey, either
from .prefix_cache import PrefixCache
from .sampling import GenerationConfig
from .speculative import (MAX_NGRAM, MIN_NGRAM, DraftLength, DraftModelDrafter, MTPDrafter, NgramDrafter,
                          common_prefix_length)
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class SpeculationConfig:
    """Which drafter proposes tokens: the draft model when set, else the model's own MTP head when
    it has one and `mtp` is on, else n-grams when `ngram` is on."""

    ngram: bool = True
    mtp: bool = True
    min_ngram: int = MIN_NGRAM
    max_ngram: int = MAX_NGRAM
    ngram_max_draft: int = 16
    draft_model: QwenModel | None = None
    draft_initial: int = 4
    draft_max: int = 8


class Engine:
    """Thread-safe generation over one model (see the module docstring)."""

    def __init__(self, model: QwenModel, tokenizer: Tokenizer, *, max_context: int | None = None,
                 prefix_cache_mib: float = 512.0, reuse_prefix: bool = True,
                 speculation: SpeculationConfig = SpeculationConfig()):
        self.model, self.tokenizer = model, tokenizer
        limit = model.config.context_length
        self.cache = model.new_cache(min(max_context or limit, limit))
        self.prefix_cache = PrefixCache(prefix_cache_mib) if reuse_prefix and prefix_cache_mib > 0 else None
        self.reuse_prefix = reuse_prefix
        self.speculation = speculation
        self._draft = None
        self._draft_lengths: dict[str, DraftLength] = {}
        self._cached_ids: list[int] = []
        self._model_lock = threading.Lock()
        self._requests = LatestByKey()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def context_length(self) -> int:
        return self.cache.max_length

    def generate(self, prompt_ids: list[int], config: GenerationConfig | None = None, *,
                 on_token: OnToken | None = None, should_stop: ShouldStop | None = None,
                 request_key: object = None, time_budget_ms: float | None = None) -> GenerationResult:
        """Generate after `prompt_ids` on the calling thread (waits for the model)."""
        config = config or GenerationConfig()
        started = time.perf_counter()
        deadline = None if time_budget_ms is None else started + time_budget_ms / 1000
        ticket, stale = self._requests.register(request_key)
        stop = either(stale, should_stop)
        try:
            with self._model_lock:
                if stop():
                    return GenerationResult("", [], len(prompt_ids), "cancelled",
                                            timings=dict(reused_prompt_tokens=0, computed_prompt_tokens=0))
                return self._run(prompt_ids, config, on_token, stop, deadline)
        finally:
            self._requests.release(request_key, ticket)

    def submit(self, prompt_ids: list[int], config: GenerationConfig | None = None, **kwargs) -> Future:
        """Queue a request on the engine's worker thread; the future holds its `GenerationResult`.
        Registering the key happens now, so the newest submission preempts older ones at once."""
        request_key = kwargs.pop("request_key", None)
        ticket, stale = self._requests.register(request_key)
        stop = either(stale, kwargs.pop("should_stop", None))
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="qwen-engine")
        future = self._executor.submit(self.generate, prompt_ids, config, should_stop=stop, **kwargs)
        future.add_done_callback(lambda _: self._requests.release(request_key, ticket))
        return future

    async def generate_async(self, prompt_ids: list[int], config: GenerationConfig | None = None,
                             **kwargs) -> GenerationResult:
        """Await a request from asyncio (the LSP server); `on_token` runs on the worker thread."""
        return await asyncio.wrap_future(self.submit(prompt_ids, config, **kwargs))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _run(self, prompt_ids: list[int], config: GenerationConfig, on_token: OnToken | None,
             should_stop: ShouldStop, deadline: float | None) -> GenerationResult:
        served, found = self._restore(prompt_ids)
        drafter, draft_length = self._drafter(reproducible=config.seed is not None and not config.greedy)
        try:
            result = generate(self.model, self.tokenizer, prompt_ids, config, self.cache, on_token, should_stop,
                              drafter=drafter, draft_length=draft_length, deadline=deadline)
            self._cached_ids = (list(prompt_ids) + result.token_ids)[: self.cache.length]
            recurrent = isinstance(self.cache, HybridCache)
            if recurrent:
                self.cache.snapshot()
            if self.prefix_cache is not None:
                self.prefix_cache.insert(self._cached_ids, self.cache)
            if recurrent:  # the prefix cache owns snapshots across requests, within its budget
                self.cache.snapshots.clear()
        except BaseException:
            self.cache.truncate(0)
            self._cached_ids = []
            if self._draft is not None:
                self._draft.reset()
            raise
        finally:
            if found is not None:
                self.prefix_cache.unpin(found)
        result.timings["reused_prompt_tokens"] = served
        result.timings["computed_prompt_tokens"] = min(len(prompt_ids), self.cache.length) - served
        return result

    def _restore(self, prompt_ids: list[int]):
        """Put the longest known prefix of the prompt (all but its last token) into the working cache."""
        if not self.reuse_prefix:
            self.cache.truncate(0)
            return 0, None
        wanted = prompt_ids[:-1]
        self.cache.truncate(common_prefix_length(self._cached_ids, wanted))
        common = self.cache.length  # a recurrent cache may keep less than asked
        found = None
        if self.prefix_cache is not None:
            found = self.prefix_cache.match(wanted)
            self.prefix_cache.pin(found)
            if found.length > common:
                self.prefix_cache.copy_into(found, self.cache, common)
                common = self.cache.length
        self._cached_ids = self._cached_ids[:common]
        return common, found

    def _drafter(self, reproducible: bool = False):
        """The drafter and its draft length; `reproducible` (seeded sampling, where the draft lengths
        steer the random draws) gets a fresh length that ignores timings and earlier requests."""
        spec = self.speculation
        if spec.draft_model is not None:
            if not isinstance(self._draft, DraftModelDrafter) or self._draft.model is not spec.draft_model:
                self._draft = DraftModelDrafter(spec.draft_model, self.cache.max_length)
            return self._draft, self._draft_length("draft", 1, spec.draft_max, reproducible)
        if spec.mtp and self.model.mtp is not None:
            if not isinstance(self._draft, MTPDrafter):
                self._draft = MTPDrafter(self.model, self.cache.max_length)
            return self._draft, self._draft_length("mtp", 1, spec.draft_max, reproducible)
        if spec.ngram:
            # One kept across requests (its index follows the prompt), but not where drafts steer random draws.
            if reproducible:
                drafter = NgramDrafter(spec.min_ngram, spec.max_ngram, self.tokenizer.stop_ids)
            else:
                if not isinstance(self._draft, NgramDrafter):
                    self._draft = NgramDrafter(spec.min_ngram, spec.max_ngram, self.tokenizer.stop_ids)
                drafter = self._draft
            # Free to draft, so free to stop: none while n-gram drafts keep failing (fresh code).
            return drafter, self._draft_length("ngram", 0, spec.ngram_max_draft, reproducible)
        return None, None

    def _draft_length(self, kind: str, minimum: int, maximum: int, fresh: bool) -> DraftLength:
        """One per kind of drafter, kept across requests (it learns the costs of this model here)."""
        if fresh:
            return DraftLength(self.speculation.draft_initial, minimum, maximum, timed=False)
        if kind not in self._draft_lengths:
            self._draft_lengths[kind] = DraftLength(self.speculation.draft_initial, minimum, maximum)
        return self._draft_lengths[kind]

