"""Call sites: the function being called at the cursor, and how the rest of the repo calls it.

A small model copies an argument list it has seen written far more readily than it reads one
off a signature, so the call sites of the callee elsewhere in the repo are context of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .similar_chunks import ChunkIndex
from .statements import DEFINITION_RE
from .symbols import IDENT_RE

MAX_CALL_LINES = 6  # a call written over more lines than this is not shown
_NAME_BEFORE_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*$")


@dataclass(frozen=True)
class CallSite:
    """A call statement in another file: lines [start_line, end_line)."""

    path: str
    start_line: int
    end_line: int
    text: str


def callee_at(prefix: str) -> str | None:
    """The name of the innermost call still open before the cursor (``f(a, |``), or None."""
    depth = 0
    for index in range(len(prefix) - 1, -1, -1):
        char = prefix[index]
        if char in ")]}":
            depth += 1
        elif char in "([{":
            if depth == 0:
                name = _NAME_BEFORE_RE.search(prefix[:index]) if char == "(" else None
                return name.group(1) if name else None
            depth -= 1
        elif char == "\n" and depth == 0 and not prefix[:index].rstrip().endswith((",", "(", "\\")):
            return None
    return None


def call_sites(chunks: ChunkIndex, text_of, name: str, exclude: str, limit: int) -> list[CallSite]:
    """Up to ``limit`` calls of ``name`` in files other than ``exclude``, whole statements,
    one per file first, then more from the same files (distinct texts only)."""
    call = re.compile(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"\s*\(")
    found: list[CallSite] = []
    seen_lines: set[tuple[str, int]] = set()
    file_lines: dict[str, list[str]] = {}
    for chunk in chunks.containing(name):
        if chunk.path == exclude:
            continue
        if chunk.path not in file_lines:
            file_lines[chunk.path] = (text_of(chunk.path) or "").split("\n")
        lines = file_lines[chunk.path]
        for number in range(chunk.start_line, min(chunk.end_line, len(lines))):
            if (chunk.path, number) in seen_lines:
                continue
            seen_lines.add((chunk.path, number))
            line = lines[number]
            if not call.search(line) or DEFINITION_RE.match(line) or \
                    line.lstrip().startswith(("#", "//", "import ", "from ")):
                continue
            end = _statement_end(lines, number)
            if end is not None:
                found.append(CallSite(chunk.path, number, end, "\n".join(lines[number:end])))
    return _spread(found, limit)


def _statement_end(lines: list[str], start: int) -> int | None:
    depth = 0
    for number in range(start, min(len(lines), start + MAX_CALL_LINES)):
        depth += sum(lines[number].count(c) for c in "([{") - sum(lines[number].count(c) for c in ")]}")
        if depth <= 0:
            return number + 1
    return None


def _spread(sites: list[CallSite], limit: int) -> list[CallSite]:
    """The first call of each file, then the next ones, skipping repeated texts."""
    chosen: list[CallSite] = []
    texts: set[str] = set()
    for round_ in range(limit):
        seen_paths: dict[str, int] = {}
        for site in sites:
            rank = seen_paths.get(site.path, 0)
            seen_paths[site.path] = rank + 1
            key = " ".join(IDENT_RE.findall(site.text)) or site.text
            if rank == round_ and key not in texts and len(chosen) < limit:
                chosen.append(site)
                texts.add(key)
    return chosen
