"""Statement boundaries from bracket depth and string state, for cutting code at lines that
read whole."""

from __future__ import annotations

import re

TRIPLE_QUOTE_RE = re.compile(r'"""|\'\'\'')
DEFINITION_RE = re.compile(r"\s*(async\s+)?(def|class|function|fn|func)\b")  # a definition's header line


def statement_start(lines: list[str], start: int, end: int) -> int:
    """``start``, or the line after the one in [start, end) that closes a bracket opened above
    ``start``: code cut inside a statement (the tail of an import list or of a call) reads as
    garbage, and the model continues it."""
    depth, lowest, after = 0, 0, start
    for index in range(start, end):
        text = lines[index]
        depth += sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")
        if depth < lowest:
            lowest, after = depth, index + 1
    return after


def code_start(lines: list[str], start: int, end: int) -> int:
    """The first line at or after ``start`` (before ``end``) that is outside any triple-quoted
    string open at ``start`` (when it closes before ``end``) and outside any statement open
    there. Cut inside a docstring, the closing quotes read as an opening one and turn the code
    after them into a string."""
    quote = open_string(lines, start)
    if quote is not None:
        start = next((index + 1 for index in range(start, end) if quote in lines[index]), start)
    return statement_start(lines, start, end)


def open_string(lines: list[str], line: int) -> str | None:
    """The triple quote of a string still open at the start of ``line``, or None."""
    quote = None
    for match in TRIPLE_QUOTE_RE.finditer("\n".join(lines[:line])):
        if quote is None:
            quote = match.group(0)
        elif match.group(0) == quote:
            quote = None
    return quote


def indent_width(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def block_floor(line: str, col: int) -> int:
    """The indentation of the block the cursor at ``col`` of ``line`` is in."""
    return indent_width(line if line.strip() else line[:col])


def leaves_block(line: str, floor: int) -> bool:
    """Whether a line after the cursor starts code outside the cursor's block (less indented
    than ``floor``, not a closing bracket): the next definition's header is not what the
    cursor is writing (a small model given it writes that definition's body as the middle)."""
    stripped = line.strip()
    return bool(stripped) and stripped[0] not in ")]}" and indent_width(line) < floor


def code_chars(text: str):
    """(index, char) outside string literals (a simple quote tracker, escapes respected)."""
    quote, escaped = "", False
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote and not escaped else quote
            escaped = char == "\\" and not escaped
        elif char in "\"'":
            quote = char
        else:
            yield i, char


def unclosed(text: str) -> list[str]:
    """The opening brackets ``text`` leaves open, outermost first (strings skipped)."""
    stack: list[str] = []
    for _, char in code_chars(text):
        if char in "([{":
            stack.append(char)
        elif char in ")]}" and stack:
            stack.pop()
    return stack


def closers(text: str) -> str:
    """The closing brackets that the brackets left open in ``text`` need, innermost first."""
    return "".join(")]}"["([{".index(char)] for char in reversed(unclosed(text)))
