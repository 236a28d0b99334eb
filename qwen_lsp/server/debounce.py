"""Adaptive debounce for automatic completion triggers, in the spirit of Tabby's.

Fast typing means the next keystroke is likely to supersede a request, so the server waits
a little longer than the typical gap between keystrokes; after a pause, or right after the
user accepted a suggestion, it waits only the base delay.
"""

from __future__ import annotations

_ALPHA = 0.3  # weight of the newest keystroke gap in the moving average
_PAUSE_S = 1.0  # longer gaps are pauses, not typing speed


class AdaptiveDebounce:
    """Per-document typing-speed estimate and the delay to use for automatic triggers."""

    def __init__(self, base_ms: float, max_ms: float = 300.0) -> None:
        self.base_ms = base_ms
        self.max_ms = max_ms
        self._last: dict[str, float] = {}
        self._gap_ms: dict[str, float] = {}
        self._ignored: dict[str, int] = {}

    def keystroke(self, uri: str, now: float) -> None:
        """Record an edit of ``uri`` at monotonic time ``now`` (seconds)."""
        last = self._last.get(uri)
        self._last[uri] = now
        if last is None or now - last > _PAUSE_S:
            return
        gap = (now - last) * 1000.0
        prev = self._gap_ms.get(uri)
        self._gap_ms[uri] = gap if prev is None else _ALPHA * gap + (1 - _ALPHA) * prev

    def shown(self, uri: str) -> None:
        """A suggestion was shown; until one is accepted, each further one waits a bit longer."""
        self._ignored[uri] = min(self._ignored.get(uri, 0) + 1, 4)

    def accepted(self, uri: str) -> None:
        self._ignored[uri] = 0

    def delay_ms(self, uri: str, now: float) -> float:
        """Delay before serving an automatic request for ``uri`` made at ``now``."""
        last = self._last.get(uri)
        gap = self._gap_ms.get(uri)
        if gap is None or last is None or now - last > _PAUSE_S:
            delay = self.base_ms
        else:
            delay = max(self.base_ms, min(1.5 * gap, self.max_ms))
        ignored = max(0, self._ignored.get(uri, 0) - 1)
        return min(delay * (1 + 0.25 * ignored), self.max_ms)

    def forget(self, uri: str) -> None:
        for table in (self._last, self._gap_ms, self._ignored):
            table.pop(uri, None)
