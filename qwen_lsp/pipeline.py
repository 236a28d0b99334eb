"""The completion pipeline shared by the server, ``qwen-lsp complete`` and ``qwen-lsp eval``.

(workspace index, document text, cursor line/col in code points) -> context -> prompt ->
model -> post-processing -> suggestion, with the time each stage took.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from .context.languages import language_for_path
from .context.recent import RecentRegions
from .context.retrieval import ContextRetriever, RetrievalResult, Snippet
from .context.workspace_index import WorkspaceIndex
from .postprocess import CursorContext, EarlyStop, is_multiline_position, postprocess
from .prompt import Budgets, Prompt, PromptBuilder, Window, local_window

STRATEGIES = ("repo", "none", "random-chunks")
RANDOM_CHUNK_LINES = 32
STOP_STRINGS = ("<|endoftext|>", "<|file_sep|>", "<|fim_prefix|>", "<|fim_suffix|>",
                "<|fim_middle|>", "<|im_end|>", "<|repo_name|>")
_TOKEN_COUNT_CACHE = 8192
_ANCHORS = 256  # files whose last window start is remembered


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline does per request."""

    budgets: Budgets = Budgets()
    strategy: str = "repo"  # repo | none | random-chunks
    max_new_tokens: int = 64
    max_lines: int = 16
    prefill_chunk: int = 64  # tokens between cancellation checks during the prefill
    anchor_window: bool = False  # keep each file's window start while it fits (see local_window)


@dataclass
class Suggestion:
    """The result of one request."""

    text: str
    raw: str
    prompt: Prompt
    multiline: bool
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage
    snippets: list[Snippet] = field(default_factory=list)
    generation: Any = None


class CompletionPipeline:
    """Turns a cursor position into a suggestion; one instance per workspace and model."""

    def __init__(self, lm: Any, index: WorkspaceIndex | None,
                 config: PipelineConfig = PipelineConfig(),
                 recent: RecentRegions | None = None) -> None:
        self.lm = lm
        self.index = index
        self.config = config
        self.recent = recent
        self.builder = PromptBuilder(lm.tokenizer)
        self._counts: OrderedDict[str, int] = OrderedDict()
        self.retriever = ContextRetriever(index, self.count_tokens, recent) if index else None
        self._last_context: tuple[tuple, RetrievalResult] | None = None
        self._anchors: OrderedDict[str, int] = OrderedDict()

    def count_tokens(self, text: str) -> int:
        """Tokens of the model's own tokenizer (memoised: lines repeat between keystrokes)."""
        count = self._counts.get(text)
        if count is None:
            count = len(self.lm.tokenizer.encode(text, parse_special=False))
            self._counts[text] = count
            if len(self._counts) > _TOKEN_COUNT_CACHE:
                self._counts.popitem(last=False)
        return count

    def build_prompt(self, path: str, text: str, line: int, col: int) -> tuple[Prompt, Window, dict[str, float]]:
        """Context and prompt for a cursor position, without running the model."""
        timings: dict[str, float] = {}
        lines = text.split("\n")
        line = max(0, min(line, len(lines) - 1))
        col = max(0, min(col, len(lines[line])))
        rel = (self.index.relpath(path) if self.index else None) or path.replace("\\", "/")
        started = time.perf_counter()
        window = local_window(text, line, col, self.count_tokens, self.config.budgets,
                              self._anchors.get(rel) if self.config.anchor_window else None)
        if self.config.anchor_window:
            self._anchors[rel] = window.start_line
            self._anchors.move_to_end(rel)
            if len(self._anchors) > _ANCHORS:
                self._anchors.popitem(last=False)
        timings["window_ms"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        snippets: list[Snippet] = []
        head: list[Snippet] = []
        if self.index is not None and self.config.strategy == "repo":
            result = self._context(rel, text, lines, line, col, window)
            snippets, head = result.snippets, result.head
        elif self.index is not None and self.config.strategy == "random-chunks":
            snippets = self._random_chunks(rel, line)
        timings["context_ms"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        repo_name = self.index.name if self.index else "workspace"
        prompt = self.builder.build(rel, repo_name, window, snippets, head)
        timings["prompt_ms"] = (time.perf_counter() - started) * 1000
        return prompt, window, timings

    def complete(self, path: str, text: str, line: int, col: int,
                 should_stop: Callable[[], bool] | None = None, *, request_key: object = None,
                 time_budget_ms: float | None = None) -> Suggestion:
        """A suggestion for the cursor at (line, col) of ``text`` (the buffer of ``path``).

        ``request_key`` and ``time_budget_ms`` go to the engine: a newer request with the same key
        preempts this one; a spent budget ends generation at the next newline (or, during the
        prefill, at the next chunk with an empty suggestion, the chunks done kept for the next one).
        """
        from inference import GenerationConfig

        started_all = time.perf_counter()
        prompt, window, timings = self.build_prompt(path, text, line, col)
        lines = text.split("\n")
        line = max(0, min(line, len(lines) - 1))
        col = max(0, min(col, len(lines[line])))
        before = "\n".join(lines[max(0, line - 60):line] + [lines[line][:col]])
        after = "\n".join([lines[line][col:]] + lines[line + 1:line + 60])
        ctx = CursorContext(before, after, language_for_path(path))
        multiline = is_multiline_position(ctx)
        ctx = CursorContext(before, after, ctx.language, multiline)
        watcher = EarlyStop(ctx, multiline, self.config.max_lines)
        started = time.perf_counter()
        result = self.lm.generate(
            prompt.ids, GenerationConfig(max_new_tokens=self.config.max_new_tokens, temperature=0.0,
                                         stop_strings=STOP_STRINGS, prefill_chunk=self.config.prefill_chunk),
            on_token=watcher.on_token,
            should_stop=lambda: watcher.done or (should_stop is not None and should_stop()),
            request_key=request_key, time_budget_ms=time_budget_ms)
        timings["model_ms"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        text_out = postprocess(result.text, ctx, self.config.max_lines)
        timings["post_ms"] = (time.perf_counter() - started) * 1000
        timings["total_ms"] = (time.perf_counter() - started_all) * 1000
        return Suggestion(text_out, result.text, prompt, multiline, timings, prompt.snippets, result)

    def forget_context(self) -> None:
        """Retrieve afresh on the next request (the eval's cursors are unrelated edits)."""
        self._last_context = None

    def _context(self, rel: str, text: str, lines: list[str], line: int, col: int,
                 window: Window) -> RetrievalResult:
        """Retrieval, reused while the window keeps its start and the file above it is unchanged:
        the context part of the prompt then stays the same and the prefix cache keeps it warm."""
        above = "\n".join(lines[:window.start_line])
        key = (rel, window.start_line, hashlib.blake2b(above.encode("utf-8", "replace"), digest_size=16).digest())
        if self._last_context and self._last_context[0] == key:
            return self._last_context[1]
        result = self.retriever.retrieve(rel, text, line, col, (window.start_line, window.end_line),
                                         self.config.budgets.context_tokens)
        self._last_context = (key, result)
        return result

    def _random_chunks(self, rel: str, line: int) -> list[Snippet]:
        """llama.vim-style baseline: random line chunks of other files, same token budget."""
        rng = random.Random(f"{rel}:{line}")
        files = sorted(f for f in self.index.files() if f != rel)
        chosen: list[Snippet] = []
        used, tries = 0, 0
        while files and used < self.config.budgets.context_tokens and tries < 32:
            tries += 1
            path = rng.choice(files)
            file_lines = (self.index.text(path) or "").split("\n")
            start = rng.randrange(max(1, len(file_lines) - RANDOM_CHUNK_LINES + 1))
            body = "\n".join(file_lines[start:start + RANDOM_CHUNK_LINES])
            cost = self.count_tokens(body) + self.count_tokens(path) + 2
            if not body.strip() or used + cost > self.config.budgets.context_tokens or any(
                    s.path == path and s.start_line < start + RANDOM_CHUNK_LINES and start < s.end_line
                    for s in chosen):
                continue
            chosen.append(Snippet(path, start, start + RANDOM_CHUNK_LINES, body, "random", 0.0, cost))
            used += cost
        return chosen
