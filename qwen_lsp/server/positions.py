"""LSP position encodings (utf-8, utf-16, utf-32) and column <-> string index conversion."""

from __future__ import annotations

UTF8 = "utf-8"
UTF16 = "utf-16"
UTF32 = "utf-32"
ENCODINGS = (UTF8, UTF16, UTF32)


def char_units(ch: str, encoding: str) -> int:
    """Code units one code point takes in ``encoding`` (lone surrogates count as one UTF-16 unit)."""
    cp = ord(ch)
    if encoding == UTF16:
        return 2 if cp > 0xFFFF else 1
    if encoding == UTF8:
        return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4
    return 1


def column_to_index(line: str, column: int, encoding: str) -> int:
    """String index of LSP ``column`` in ``line``; past the end clamps to the end, inside a
    character snaps to that character's start."""
    if column <= 0:
        return 0
    if encoding == UTF32 or line.isascii():
        return min(column, len(line))
    units = 0
    for index, ch in enumerate(line):
        units += char_units(ch, encoding)
        if units > column:
            return index
        if units == column:
            return index + 1
    return len(line)


def index_to_column(line: str, index: int, encoding: str) -> int:
    """LSP column of string ``index`` in ``line``."""
    index = max(0, min(index, len(line)))
    if encoding == UTF32 or line.isascii():
        return index
    return sum(char_units(ch, encoding) for ch in line[:index])


def text_units(text: str, encoding: str) -> int:
    """Length of ``text`` in code units of ``encoding``."""
    return index_to_column(text, len(text), encoding)
