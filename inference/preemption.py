"""Newest-request-wins per key: a request for a key (a document) goes stale once a newer one arrives."""

from __future__ import annotations

import itertools
import threading
from typing import Callable


class LatestByKey:
    """Tracks the newest request per key; entries leave when their request ends (bounded memory)."""

    def __init__(self):
        self._latest: dict[object, int] = {}
        self._lock = threading.Lock()
        self._tickets = itertools.count(1)

    def register(self, key: object) -> tuple[int, Callable[[], bool]]:
        """Make a new request the newest for `key`; return its ticket and 'is it stale?'."""
        ticket = next(self._tickets)
        if key is None:
            return ticket, lambda: False
        with self._lock:
            self._latest[key] = ticket
        return ticket, lambda: self._latest.get(key) != ticket

    def release(self, key: object, ticket: int) -> None:
        if key is None:
            return
        with self._lock:
            if self._latest.get(key) == ticket:
                del self._latest[key]


def either(first: Callable[[], bool], second: Callable[[], bool] | None) -> Callable[[], bool]:
    return first if second is None else (lambda: first() or second())
