"""The server's ``Completer``: the same CompletionPipeline as ``qwen-lsp complete``.

One pipeline per workspace root (each with its own background WorkspaceIndex and recent
regions); documents outside every root get the pipeline without repository context. Edits to
open documents reach the index before the next completion (not per keystroke: re-indexing a
file costs more than typing a character should). Extra
candidates, when asked for, are sampled from the same prompt and post-processed alike.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from qwen_lsp.context.languages import language_for_path
from qwen_lsp.context.recent import RecentRegions
from qwen_lsp.context.workspace_index import WorkspaceIndex
from qwen_lsp.pipeline import STOP_STRINGS, CompletionPipeline, PipelineConfig
from qwen_lsp.postprocess import CursorContext, postprocess
from qwen_lsp.prompt import Budgets
from qwen_lsp.server.completer import CompletionRequest

_SAMPLE_TEMPERATURE = 0.7
_CONTEXT_LINES = 60


class PipelineCompleter:
    """Routes each request to the pipeline of the workspace root holding its file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._indexes: dict[Path, WorkspaceIndex] = {}
        self._recent: dict[Path, RecentRegions] = {}
        self._pipelines: dict[Path | None, tuple[Any, CompletionPipeline]] = {}
        self._edited: dict[str, str] = {}  # path -> latest unsaved text, not yet in the index
        self.last_prompt = ""  # the last prompt sent to the model, control tokens spelled out
        self.last_generation: dict = {}  # what the engine reported for it (see generation_summary)

    # -- workspace ------------------------------------------------------------------------

    def add_root(self, root: Path) -> None:
        """Start indexing ``root`` in the background."""
        with self._lock:
            if root not in self._indexes:
                index = WorkspaceIndex(root)
                self._indexes[root] = index
                self._recent[root] = RecentRegions()
                index.start()

    def remove_root(self, root: Path) -> None:
        with self._lock:
            index = self._indexes.pop(root, None)
            self._recent.pop(root, None)
            self._pipelines.pop(root, None)
        if index is not None:
            index.stop()

    def _root_of(self, path: str | None) -> Path | None:
        if path is None:
            return None
        real = Path(os.path.realpath(path))
        matches = [r for r in self._indexes if real == r or r in real.parents]
        return max(matches, key=lambda r: len(r.parts)) if matches else None

    def file_changed(self, path: str, text: str | None) -> None:
        """A file inside a root was saved, created, changed or deleted (``text`` None: re-read)."""
        root = self._root_of(path)
        if root is None:
            return
        with self._lock:
            self._edited.pop(path, None)
        if text is None:
            self._indexes[root].refresh_file(path)
        else:
            self._indexes[root].update_file(path, text)

    def file_edited(self, path: str, text: str) -> None:
        """An open document inside a root changed; the index takes it before the next completion."""
        if self._root_of(path) is not None:
            with self._lock:
                self._edited[path] = text

    def _index_edits(self) -> None:
        with self._lock:
            edited, self._edited = self._edited, {}
        for path, text in edited.items():
            self.file_changed(path, text)

    def touched(self, path: str | None, line: int, edited: bool) -> None:
        """Record where the user edited or looked (feeds the "recent" context)."""
        root = self._root_of(path)
        if root is not None:
            rel = self._indexes[root].relpath(path)
            if rel is not None:
                self._recent[root].touch(rel, line, edited)

    # -- completion -----------------------------------------------------------------------

    def _pipeline(self, lm: Any, root: Path | None) -> CompletionPipeline:
        with self._lock:
            found = self._pipelines.get(root)
            if found is None or found[0] is not lm:
                index = self._indexes.get(root) if root else None
                config = PipelineConfig(anchor_window=True)
                pipeline = CompletionPipeline(lm, index, config, self._recent.get(root) if root else None)
                self._pipelines[root] = (lm, pipeline)
                return pipeline
            return found[1]

    def complete(self, lm: Any, request: CompletionRequest, should_stop: Callable[[], bool]) -> list[str]:
        self._index_edits()
        root = self._root_of(request.path)
        pipeline = self._pipeline(lm, root)
        pipeline.config = replace(pipeline.config, budgets=split_budget(request.context_budget),
                                  max_new_tokens=request.max_new_tokens)
        path = request.path or _virtual_path(request.uri, request.language_id)
        line, col = request.line_col
        first = pipeline.complete(path, request.text, line, col, should_stop=should_stop,
                                  request_key=request.uri, time_budget_ms=request.time_budget_ms)
        self.last_prompt = first.prompt.text
        self.last_generation = generation_summary(first.generation)
        results = [first.text] if first.text else []
        for seed in range(1, request.candidates):
            if should_stop():
                break
            text = self._sample(lm, pipeline, first, path, request, seed, should_stop)
            if text and text not in results:
                results.append(text)
        return results

    def _sample(self, lm, pipeline: CompletionPipeline, first, path: str, request: CompletionRequest,
                seed: int, should_stop: Callable[[], bool]) -> str:
        from inference import GenerationConfig

        stops = STOP_STRINGS if first.multiline else STOP_STRINGS + ("\n",)
        config = GenerationConfig(max_new_tokens=request.max_new_tokens, temperature=_SAMPLE_TEMPERATURE,
                                  seed=seed, stop_strings=stops, prefill_chunk=pipeline.config.prefill_chunk)
        raw = lm.generate(first.prompt.ids, config, should_stop=should_stop, request_key=request.uri,
                          time_budget_ms=request.time_budget_ms).text
        before = "\n".join(request.prefix.split("\n")[-_CONTEXT_LINES:])
        after = "\n".join(request.suffix.split("\n")[:_CONTEXT_LINES])
        ctx = CursorContext(before, after, language_for_path(path), first.multiline)
        return postprocess(raw, ctx, pipeline.config.max_lines)

    def close(self) -> None:
        for root in list(self._indexes):
            self.remove_root(root)


def generation_summary(result: Any) -> dict:
    """The engine's account of one generation: why it stopped and how much of the prompt the
    prefix cache served (for ``qwenLsp/stats``)."""
    timings = result.timings
    return dict(stop_reason=result.stop_reason, prompt_tokens=result.prompt_tokens,
                reused_prompt_tokens=timings.get("reused_prompt_tokens", 0),
                generated_tokens=len(result.token_ids))


def split_budget(total: int) -> Budgets:
    """The ``contextBudget`` setting (prompt tokens in all) as the pipeline's three budgets, in
    the proportions of its evaluated CPU profile (which the default budget reproduces)."""
    cpu = Budgets.for_device("cpu")
    scale = total / (cpu.prefix_tokens + cpu.suffix_tokens + cpu.context_tokens)
    return Budgets(prefix_tokens=max(32, int(cpu.prefix_tokens * scale)),
                   suffix_tokens=max(8, int(cpu.suffix_tokens * scale)),
                   context_tokens=int(cpu.context_tokens * scale))


_EXTENSIONS = {"python": ".py", "javascript": ".js", "typescript": ".ts", "typescriptreact": ".tsx",
               "javascriptreact": ".jsx", "rust": ".rs", "go": ".go", "java": ".java", "c": ".c", "cpp": ".cpp",
               "markdown": ".md", "shellscript": ".sh", "ruby": ".rb", "lua": ".lua"}


def _virtual_path(uri: str, language_id: str) -> str:
    """A file name for documents outside the roots (it picks the language and the prompt's path)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "untitled"
    if "." not in name:
        name += _EXTENSIONS.get(language_id, "")
    return name
