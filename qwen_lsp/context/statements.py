"""Statement boundaries from bracket depth, for cutting code at lines that read whole."""

from __future__ import annotations


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
