"""Runs FIM cases through the full pipeline and scores the suggestions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from ..context.workspace_index import WorkspaceIndex
from ..pipeline import CompletionPipeline, PipelineConfig
from .cases import Case, masked_document, resolve_workspace
from .metrics import score

log = logging.getLogger(__name__)


def run_cases(lm: Any, cases: list[Case], configs: dict[str, PipelineConfig],
              on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """One result row per (case, named config) that could be run; the configs take turns on
    each case, so a partial run still compares them on the same cases. Cases whose files
    changed since they were made are skipped."""
    indexes: dict[str, WorkspaceIndex] = {}
    pipelines: dict[tuple[str, str], CompletionPipeline] = {}
    rows = []
    for case in cases:
        try:
            root = resolve_workspace(case.workspace)
            original = (root / case.file).read_text(encoding="utf-8")
            document = masked_document(case, original)
        except (OSError, ValueError) as error:
            log.warning("skipping case %s: %s", case.id, error)
            continue
        if case.workspace not in indexes:
            indexes[case.workspace] = WorkspaceIndex(root)
            indexes[case.workspace].index_all()
        index = indexes[case.workspace]
        index.update_file(case.file, document)  # the index must not see the answer
        try:
            for name, config in configs.items():
                key = (case.workspace, name)
                if key not in pipelines:
                    pipelines[key] = CompletionPipeline(lm, index, config)
                pipelines[key].forget_context()  # no context kept from another case's cursor
                suggestion = pipelines[key].complete(str(Path(root) / case.file), document,
                                                     case.line, case.col)
                row = {"config": name, "id": case.id, "kind": case.kind,
                       "project": case.id.split("/", 1)[0],
                       "expected": case.middle, "prediction": suggestion.text,
                       "raw": suggestion.raw, "prompt_tokens": len(suggestion.prompt.ids),
                       "timings": suggestion.timings,
                       "snippets": [f"{s.source}:{s.path}:{s.start_line}"
                                    for s in suggestion.snippets],
                       **score(suggestion.text, case.middle)}
                rows.append(row)
                if on_row is not None:
                    on_row(row)
        finally:
            index.update_file(case.file, original)
    return rows
