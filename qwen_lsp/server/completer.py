"""The seam between the server and prompt building + generation.

The server hands a ``CompletionRequest`` (a document snapshot and a cursor) to a
``Completer`` running on the model thread and gets suggestion texts back. ``PlainFimCompleter``
is the minimal fill-in-the-middle path: the current file only, no repository context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import inference

FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"
_CHARS_PER_TOKEN = 3  # conservative, to cut the prompt before tokenizing


@dataclass(frozen=True)
class CompletionRequest:
    """What to complete: a snapshot of one document and the cursor offset in it."""

    uri: str
    path: str | None  # filesystem path when the document lives inside a workspace root
    language_id: str
    text: str
    offset: int
    max_new_tokens: int
    context_budget: int  # prompt tokens
    candidates: int = 1
    multiline: bool = True

    @property
    def prefix(self) -> str:
        return self.text[: self.offset]

    @property
    def suffix(self) -> str:
        return self.text[self.offset :]


class Completer(Protocol):
    def complete(self, lm, request: CompletionRequest, should_stop: Callable[[], bool]) -> list[str]:
        """Suggestion texts to insert at the cursor (best first, possibly empty)."""


class PlainFimCompleter:
    """Qwen-Coder FIM on the current file, cut to the context budget around the cursor."""

    def complete(self, lm, request: CompletionRequest, should_stop: Callable[[], bool]) -> list[str]:
        tok = lm.tokenizer
        budget_chars = request.context_budget * _CHARS_PER_TOKEN
        prefix = request.prefix[-(budget_chars * 3 // 4) :]
        suffix = request.suffix[: budget_chars // 4]
        ids = (
            [tok.token_id(FIM_PREFIX)]
            + tok.encode(prefix, parse_special=False)
            + [tok.token_id(FIM_SUFFIX)]
            + tok.encode(suffix, parse_special=False)
            + [tok.token_id(FIM_MIDDLE)]
        )
        stops = ("\n\n\n",) if request.multiline else ("\n",)
        results: list[str] = []
        for i in range(request.candidates):
            if should_stop():
                break
            config = inference.GenerationConfig(
                max_new_tokens=request.max_new_tokens,
                temperature=0.0 if i == 0 else 0.8,
                stop_strings=stops,
            )
            text = trim_suggestion(lm.generate(ids, config, should_stop=should_stop).text, request)
            if text and text not in results:
                results.append(text)
        return results


def trim_suggestion(text: str, request: CompletionRequest) -> str:
    """Cut a raw generation to what should be inserted: no special tokens, no trailing blank
    lines, and no repetition of the text that already follows the cursor."""
    for marker in ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|im_end|>", FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE):
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    if not request.multiline:
        text = text.split("\n", 1)[0]
    text = text.rstrip()
    rest_of_line = request.suffix.split("\n", 1)[0].strip()
    if rest_of_line and text.endswith(rest_of_line):
        text = text[: -len(rest_of_line)]
    next_line = request.suffix.split("\n", 2)[1].strip() if request.suffix.count("\n") >= 1 else ""
    if next_line and "\n" in text:
        lines = text.split("\n")
        for i, line in enumerate(lines[1:], start=1):
            if line.strip() == next_line:
                text = "\n".join(lines[:i]).rstrip()
                break
    return text
