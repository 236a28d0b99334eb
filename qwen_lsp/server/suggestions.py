"""From a cursor to suggestion texts: cache, debounce, stale drops, preemption, the model.

Plain asyncio code with no LSP types, shared by inline completion, classic completion and
code actions. ``None`` means "drop": the request went stale (a newer edit or request
superseded it); an empty list means "nothing to suggest".
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Callable

from qwen_lsp.server.completer import Completer, CompletionRequest
from qwen_lsp.server.completion_cache import CompletionCache
from qwen_lsp.server.debounce import AdaptiveDebounce
from qwen_lsp.server.model_host import Lane, ModelHost, StopFlag, Stopped

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """What happened to completion requests (for logs, tests and the closing figures)."""

    requests: int = 0
    cache_hits: int = 0
    model_calls: int = 0
    dropped_stale: int = 0
    cancelled: int = 0
    not_ready: int = 0
    precomputed: int = 0
    errors: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class SuggestionService:
    """Answers "what would you insert here?" for one cursor, cheaply when it can."""

    def __init__(
        self,
        host: ModelHost,
        completer: Completer,
        debounce: AdaptiveDebounce,
        cache: CompletionCache,
        version_of: Callable[[str], int | None],
        on_busy: Callable[[bool], None] = lambda busy: None,
    ) -> None:
        self.host = host
        self.completer = completer
        self.debounce = debounce
        self.cache = cache
        self._version_of = version_of
        self._on_busy = on_busy
        self.counters = Counters()
        self.typing_lane = Lane()
        self.precompute_lane = Lane()
        self._running = 0

    async def suggest(
        self, request: CompletionRequest, version: int, *, explicit: bool, lane: Lane | None = None
    ) -> list[str] | None:
        """Suggestions for ``request`` taken at document ``version``; None when stale."""
        self.counters.requests += 1
        if not self.host.ready:
            self.counters.not_ready += 1
            return []
        cached = self.cache.get(request.uri, request.prefix, request.suffix)
        if cached is not None:
            self.counters.cache_hits += 1
            return cached[: request.candidates]
        if not explicit:
            await asyncio.sleep(self.debounce.delay_ms(request.uri, time.monotonic()) / 1000.0)
            if self._version_of(request.uri) != version:
                self.counters.dropped_stale += 1
                return None
        flag = (lane or self.typing_lane).replace(StopFlag())
        suggestions = await self._generate(request, flag)
        if suggestions is None:
            return None
        if self._version_of(request.uri) != version:
            self.counters.dropped_stale += 1
            return None
        return suggestions

    async def precompute(self, request: CompletionRequest) -> None:
        """Fill the cache for a cursor the user is likely to reach (after accepting a suggestion)."""
        if not self.host.ready or self.host.busy or self.cache.get(request.uri, request.prefix, request.suffix):
            return
        flag = self.precompute_lane.replace(StopFlag())
        if await self._generate(request, flag):
            self.counters.precomputed += 1

    async def _generate(self, request: CompletionRequest, flag: StopFlag) -> list[str] | None:
        self.counters.model_calls += 1
        self._running += 1
        self._on_busy(True)
        try:
            suggestions = await self.host.run(lambda lm, stop: self.completer.complete(lm, request, stop), flag)
        except Stopped:
            self.counters.cancelled += 1
            return None
        except asyncio.CancelledError:
            self.counters.cancelled += 1
            raise
        except Exception:  # a runtime or prompt failure costs this suggestion, not the server
            log.exception("completion failed for %s", request.uri)
            self.counters.errors += 1
            return []
        finally:
            self._running -= 1
            self._on_busy(self._running > 0)
        if flag.cancelled:
            self.counters.cancelled += 1
            return None
        if suggestions:  # nothing may mean "out of time": the next request goes on where this one stopped
            self.cache.put(request.uri, request.prefix, request.suffix, suggestions)
        return suggestions

    def after_accept(self, request: CompletionRequest, accepted: str) -> CompletionRequest:
        """The request the cursor will make once ``accepted`` was inserted at ``request``'s cursor."""
        text = request.prefix + accepted + request.suffix
        return replace(request, text=text, offset=request.offset + len(accepted))
