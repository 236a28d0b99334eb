"""Open documents: full text, version and language, updated by full or incremental changes."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from lsprotocol import types

from qwen_lsp.server.positions import column_to_index, index_to_column

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (JSON can carry them, UTF-8 cannot) replaced by U+FFFD;
    one code point and one UTF-16 unit each, so positions do not move."""
    return _LONE_SURROGATE.sub("\ufffd", text) if _LONE_SURROGATE.search(text) else text


class PositionError(ValueError):
    """A position names a line the document does not have."""


@dataclass
class Document:
    """One open text document; offsets are indices into ``text`` (code points)."""

    uri: str
    language_id: str
    version: int
    text: str
    _line_starts: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.text = clean_text(self.text)
        self._index_lines()

    def _index_lines(self) -> None:
        self._line_starts = [0] + [m.end() for m in _LINE_BREAK.finditer(self.text)]

    @property
    def line_count(self) -> int:
        return len(self._line_starts)

    def line_span(self, line: int) -> tuple[int, int]:
        """Start and end offsets of ``line`` without its line break."""
        start = self._line_starts[line]
        end = self._line_starts[line + 1] if line + 1 < len(self._line_starts) else len(self.text)
        while end > start and self.text[end - 1] in "\r\n":
            end -= 1
        return start, end

    def line_text(self, line: int) -> str:
        start, end = self.line_span(line)
        return self.text[start:end]

    def offset_at(self, position: types.Position, encoding: str, *, clamp: bool = False) -> int:
        """Offset of ``position``; a line past the end raises PositionError unless ``clamp``."""
        line = position.line
        if line < 0 or line >= self.line_count:
            if not clamp:
                raise PositionError(f"line {line} is outside 0..{self.line_count - 1}")
            if line < 0:
                return 0
            return len(self.text)
        start, end = self.line_span(line)
        return start + column_to_index(self.text[start:end], position.character, encoding)

    def position_at(self, offset: int, encoding: str) -> types.Position:
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self._line_starts, offset) - 1
        start, end = self.line_span(line)
        return types.Position(line, index_to_column(self.text[start:end], min(offset, end) - start, encoding))

    def apply_change(self, change: types.TextDocumentContentChangeEvent, encoding: str) -> None:
        """Apply one full or incremental change; ranges past the end are clamped."""
        rng = getattr(change, "range", None)
        if rng is None:
            self.text = clean_text(change.text)
        else:
            start = self.offset_at(rng.start, encoding, clamp=True)
            end = self.offset_at(rng.end, encoding, clamp=True)
            if end < start:
                start, end = end, start
            self.text = self.text[:start] + clean_text(change.text) + self.text[end:]
        self._index_lines()


class DocumentStore:
    """The open documents, by URI."""

    def __init__(self) -> None:
        self._docs: dict[str, Document] = {}

    def open(self, item: types.TextDocumentItem) -> Document:
        doc = Document(item.uri, item.language_id, item.version, item.text)
        self._docs[item.uri] = doc
        return doc

    def change(self, params: types.DidChangeTextDocumentParams, encoding: str) -> Document | None:
        doc = self._docs.get(params.text_document.uri)
        if doc is None:
            return None
        for change in params.content_changes:
            doc.apply_change(change, encoding)
        doc.version = params.text_document.version
        return doc

    def close(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def get(self, uri: str) -> Document | None:
        return self._docs.get(uri)

    def __len__(self) -> int:
        return len(self._docs)
