"""LRU of recent suggestions, answering "typed-through" requests without the model.

An entry remembers the text before and after the cursor and the suggestion shown there.
If the document now reads ``prefix + typed`` before the cursor with the same text after it,
and ``typed`` is the start of the suggestion, the rest of the suggestion is the answer.
Only the last 2048 characters before the cursor are compared, which bounds memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

_SUFFIX_KEY = 256  # characters after the cursor that must match
_PREFIX_KEY = 2048  # characters before the suggestion's start that must match


@dataclass(frozen=True)
class _Entry:
    prefix_tail: str
    suggestions: tuple[str, ...]


class CompletionCache:
    """Bounded LRU of suggestions keyed by document, text before and text after the cursor."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, int, int, str], _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def put(self, uri: str, prefix: str, suffix: str, suggestions: list[str]) -> None:
        suggestions = tuple(s for s in suggestions if s)
        if not suggestions:
            return
        tail = prefix[-_PREFIX_KEY:]
        key = (uri, len(prefix), hash(tail), suffix[:_SUFFIX_KEY])
        self._entries[key] = _Entry(tail, suggestions)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, uri: str, prefix: str, suffix: str) -> list[str] | None:
        """Remaining suggestions for the cursor between ``prefix`` and ``suffix``, if any."""
        suffix_key = suffix[:_SUFFIX_KEY]
        # Newest first: the most recent suggestion is what the editor is showing.
        for key in reversed(self._entries):
            key_uri, length, _, key_suffix = key
            if key_uri != uri or key_suffix != suffix_key or length > len(prefix):
                continue
            entry = self._entries[key]
            typed = prefix[length:]
            if prefix[length - len(entry.prefix_tail) : length] != entry.prefix_tail:
                continue
            rest = [s[len(typed):] for s in entry.suggestions if s.startswith(typed) and len(s) > len(typed)]
            if rest:
                self._entries.move_to_end(key)
                self.hits += 1
                return rest
        self.misses += 1
        return None

    def forget(self, uri: str) -> None:
        for key in [k for k in self._entries if k[0] == uri]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
