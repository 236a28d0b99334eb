"""Owns the model: loads it in the background and runs all model work on one thread.

Work is submitted with a ``StopFlag``; queued work whose flag is set never starts, and running
work sees the flag through the runtime's ``should_stop`` between tokens and prefill chunks. A ``Lane`` keeps one
live request: submitting to it stops the previous one (newest keystroke wins).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

LOADING, READY, ERROR, IDLE = "loading", "ready", "error", "idle"


def _load_with_runtime(spec: str) -> Any:
    """``inference.load_model``, imported here so that torch loads off the LSP thread."""
    import inference

    return inference.load_model(spec, progress=False)


class Stopped(Exception):
    """Model work was stopped (cancelled, superseded or stale) before it produced a result."""


class StopFlag:
    """Cooperative cancellation for one request (the time budget is the engine's)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def __call__(self) -> bool:
        """True once cancelled (the runtime's ``should_stop``)."""
        return self._event.is_set()


class Lane:
    """At most one live request: a new one stops the one before."""

    def __init__(self) -> None:
        self._current: StopFlag | None = None

    def replace(self, flag: StopFlag) -> StopFlag:
        if self._current is not None:
            self._current.set()
        self._current = flag
        return flag


class ModelHost:
    """Background model loading plus a single worker thread for generation."""

    def __init__(self, loader: Callable[[str], Any] | None = None) -> None:
        self._loader = loader or _load_with_runtime
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwen-model")
        self.lm: Any = None
        self.spec: str | None = None
        self.state = IDLE
        self.error: str | None = None
        self.busy = 0  # model jobs queued or running

    @property
    def ready(self) -> bool:
        return self.state == READY and self.lm is not None

    async def load(self, spec: str) -> None:
        """Load ``spec`` on the model thread; afterwards ``state`` is READY or ERROR."""
        self.state, self.spec, self.error = LOADING, spec, None
        loop = asyncio.get_running_loop()
        try:
            lm = await loop.run_in_executor(self._executor, self._loader, spec)
        except Exception as exc:  # any loader failure is reported, never fatal
            log.exception("loading model %r failed", spec)
            self.lm, self.state, self.error = None, ERROR, f"{type(exc).__name__}: {exc}"
            return
        if self.spec == spec:  # a newer load() call wins
            self.lm, self.state = lm, READY

    async def run(self, job: Callable[[Any, StopFlag], T], flag: StopFlag) -> T:
        """Run ``job(lm, flag)`` on the model thread; raises Stopped if the flag was set first.

        If the awaiting task is cancelled ($/cancelRequest), the flag is set so the engine stops.
        """
        if not self.ready:
            raise Stopped("model not ready")
        lm = self.lm

        def guarded() -> T:
            if flag.cancelled:
                raise Stopped("superseded before start")
            return job(lm, flag)

        loop = asyncio.get_running_loop()
        self.busy += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(guarded), loop=loop)
        except asyncio.CancelledError:
            flag.set()
            raise
        finally:
            self.busy -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
