"""The seam between the server and prompt building + generation.

The server hands a ``CompletionRequest`` (a document snapshot and a cursor) to a
``Completer`` running on the model thread and gets suggestion texts back; the production
``Completer`` is ``pipeline_completer.PipelineCompleter`` over the shared CompletionPipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol


@dataclass(frozen=True)
class CompletionRequest:
    """What to complete: a snapshot of one document and the cursor offset in it."""

    uri: str
    path: str | None  # filesystem path when the document lives inside a workspace root
    language_id: str
    text: str
    offset: int
    max_new_tokens: int
    context_budget: int  # prompt tokens in all
    time_budget_ms: int | None = None  # the engine's time budget for this request
    candidates: int = 1

    @property
    def prefix(self) -> str:
        return self.text[: self.offset]

    @property
    def suffix(self) -> str:
        return self.text[self.offset :]

    @property
    def line_col(self) -> tuple[int, int]:
        """0-based line and column in code points, lines split on ``\\n`` only."""
        line = self.text.count("\n", 0, self.offset)
        return line, self.offset - (self.text.rfind("\n", 0, self.offset) + 1)


class Completer(Protocol):
    def complete(self, lm, request: CompletionRequest, should_stop: Callable[[], bool]) -> list[str]:
        """Suggestion texts to insert at the cursor (best first, possibly empty)."""
