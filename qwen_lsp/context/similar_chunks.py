"""Similar-chunk retrieval: files cut into line windows, ranked by BM25 over identifiers."""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass

from .symbols import IDENT_RE

CHUNK_LINES = 16
CHUNK_STRIDE = 8
_K1, _B = 1.2, 0.75
_MAX_DF_FRACTION = 0.25  # tokens in more chunks than this carry no signal and cost time


@dataclass(frozen=True)
class Chunk:
    """A window of lines in one file."""

    path: str
    start_line: int  # 0-based inclusive
    end_line: int  # 0-based exclusive
    length: int  # number of identifier tokens


def tokenize(text: str) -> list[str]:
    """Identifiers, the unit of similarity (keywords included; BM25's idf discounts them)."""
    return IDENT_RE.findall(text)


class ChunkIndex:
    """An inverted index of line windows over the workspace, updated file by file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: dict[int, Chunk] = {}
        self._postings: dict[str, dict[int, int]] = {}
        self._by_file: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
        self._total_length = 0
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def set_file(self, path: str, text: str) -> None:
        """Index (or re-index) a file's chunks."""
        lines = text.split("\n")
        prepared = []
        for start in range(0, max(1, len(lines) - CHUNK_LINES + CHUNK_STRIDE), CHUNK_STRIDE):
            end = min(len(lines), start + CHUNK_LINES)
            counts = Counter(tokenize("\n".join(lines[start:end])))
            if counts:
                prepared.append((start, end, counts))
        with self._lock:
            self._remove_locked(path)
            ids = []
            for start, end, counts in prepared:
                chunk_id = self._next_id
                self._next_id += 1
                length = sum(counts.values())
                self._chunks[chunk_id] = Chunk(path, start, end, length)
                self._total_length += length
                for token, tf in counts.items():
                    self._postings.setdefault(token, {})[chunk_id] = tf
                ids.append((chunk_id, tuple(counts)))
            self._by_file[path] = ids

    def remove_file(self, path: str) -> None:
        """Forget a file's chunks."""
        with self._lock:
            self._remove_locked(path)

    def _remove_locked(self, path: str) -> None:
        for chunk_id, tokens in self._by_file.pop(path, []):
            chunk = self._chunks.pop(chunk_id)
            self._total_length -= chunk.length
            for token in tokens:
                postings = self._postings[token]
                del postings[chunk_id]
                if not postings:
                    del self._postings[token]

    def containing(self, token: str) -> list[Chunk]:
        """The chunks holding an identifier, in file and line order."""
        with self._lock:
            chunks = [self._chunks[i] for i in self._postings.get(token, ())]
        return sorted(chunks, key=lambda c: (c.path, c.start_line))

    def search(self, query: Counter, top_k: int = 8) -> list[tuple[float, Chunk]]:
        """The best-matching chunks for a bag of identifiers, best first."""
        with self._lock:
            n = len(self._chunks)
            if n == 0:
                return []
            avg = self._total_length / n
            scores: dict[int, float] = {}
            for token, qtf in query.items():
                postings = self._postings.get(token)
                if not postings or len(postings) > max(8, _MAX_DF_FRACTION * n):
                    continue
                df = len(postings)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                weight = idf * (1 + math.log(qtf))
                for chunk_id, tf in postings.items():
                    chunk = self._chunks[chunk_id]
                    norm = tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * chunk.length / avg))
                    scores[chunk_id] = scores.get(chunk_id, 0.0) + weight * norm
            ranked = sorted(scores.items(), key=lambda item: -item[1])[:top_k]
            return [(score, self._chunks[chunk_id]) for chunk_id, score in ranked]
