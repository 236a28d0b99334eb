"""FIM eval cases: the JSONL format and how a case becomes a document with a cursor."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

PACKAGE_PREFIX = "python-package:"


@dataclass(frozen=True)
class Case:
    """One masked span: the document is ``file`` with ``middle`` removed at (line, col)."""

    id: str
    kind: str  # line | call_args | block
    workspace: str  # a directory, or "python-package:NAME" for an installed package
    file: str  # relative to the workspace
    line: int
    col: int  # code points
    middle: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def load_cases(path: str | os.PathLike) -> list[Case]:
    with open(path, encoding="utf-8") as handle:
        return [Case(**json.loads(line)) for line in handle if line.strip()]


def spread(cases: list[Case], limit: int | None) -> list[Case]:
    """Up to ``limit`` cases taken round-robin over (workspace, kind), so a small run still
    covers every project and kind."""
    if limit is None or limit >= len(cases):
        return list(cases)
    groups: dict[tuple[str, str], list[Case]] = {}
    for case in cases:
        groups.setdefault((case.workspace, case.kind), []).append(case)
    queues = list(groups.values())
    chosen: list[Case] = []
    while len(chosen) < limit:
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return chosen


def resolve_workspace(workspace: str) -> Path:
    """The directory a case's workspace names."""
    if workspace.startswith(PACKAGE_PREFIX):
        spec = importlib.util.find_spec(workspace[len(PACKAGE_PREFIX):])
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package not installed: {workspace}")
        return Path(list(spec.submodule_search_locations)[0])
    return Path(workspace)


def masked_document(case: Case, text: str) -> str:
    """The file with the middle cut out; ValueError when the file no longer matches."""
    lines = text.split("\n")
    if case.line >= len(lines):
        raise ValueError(f"{case.id}: line {case.line} past the end of {case.file}")
    offset = sum(len(l) + 1 for l in lines[:case.line]) + case.col
    if text[offset:offset + len(case.middle)] != case.middle:
        raise ValueError(f"{case.id}: {case.file} changed since the case was made")
    return text[:offset] + text[offset + len(case.middle):]
