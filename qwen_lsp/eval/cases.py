"""FIM eval cases: the JSONL format and how a case becomes a document with a cursor."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

PACKAGE_PREFIX = "python-package:"
GIT_PREFIX = "git:"  # a commit of the repository this package is in


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
    """The directory a case's workspace names: a path, an installed package, or a commit of
    this repository (extracted once into the cache; projects the model cannot have seen)."""
    if workspace.startswith(GIT_PREFIX):
        return _git_snapshot(workspace[len(GIT_PREFIX):])
    if workspace.startswith(PACKAGE_PREFIX):
        spec = importlib.util.find_spec(workspace[len(PACKAGE_PREFIX):])
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package not installed: {workspace}")
        return Path(list(spec.submodule_search_locations)[0])
    return Path(workspace)


def _git_snapshot(commit: str) -> Path:
    snapshot = Path(os.path.expanduser("~/.cache/qwen-lsp/eval-workspaces")) / commit
    target = snapshot / "qwen-lsp"  # the directory name is the repo name in prompts
    if not target.is_dir():
        repo = Path(__file__).resolve().parents[2]
        partial = snapshot / "partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(repo), "archive", commit], check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(partial, filter="data")
        partial.rename(target)
    return target


def masked_document(case: Case, text: str) -> str:
    """The file with the middle cut out; ValueError when the file no longer matches."""
    lines = text.split("\n")
    if case.line >= len(lines):
        raise ValueError(f"{case.id}: line {case.line} past the end of {case.file}")
    offset = sum(len(l) + 1 for l in lines[:case.line]) + case.col
    if text[offset:offset + len(case.middle)] != case.middle:
        raise ValueError(f"{case.id}: {case.file} changed since the case was made")
    return text[:offset] + text[offset + len(case.middle):]
