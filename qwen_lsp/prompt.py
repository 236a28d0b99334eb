"""FIM prompt builder: Qwen repo-level FIM, plain FIM, or plain prefix, built as token ids.

Layout (repo-level)::

    <|repo_name|>NAME
    <|file_sep|>path/of/context_file
    ...snippets...
    <|file_sep|>path/of/current_file
    <|fim_prefix|>HEAD + PREFIX WINDOW<|fim_suffix|>SUFFIX WINDOW<|fim_middle|>

Context goes first, so the runtime's prefix cache keeps it between keystrokes (retrieval is
reused while the window start stays); only the window around the cursor changes. Context
files go from the least to the most relevant, the definitions the cursor uses last. User text (code, paths, the repo
name) is encoded with ``parse_special=False`` and control tokens are spliced in as ids, so
no text can inject a control token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from .context.languages import comment_prefix
from .context.retrieval import Snippet
from .context.statements import block_floor, code_start, leaves_block

WINDOW_SNAP_LINES = 16
MAX_CHARS_PER_TOKEN = 8  # code rarely packs more characters into one token
# files go from the least to the most relevant source: the model attends most to what is
# closest to the current file, so the definitions the cursor uses come last, and the calls of
# the function being called (the argument lists a small model copies) after them
SOURCE_ORDER = {"similar": 0, "recent": 1, "sibling": 2, "repo": 3, "import": 4, "local": 4,
                "usage": 5}


class Tokenizer(Protocol):
    def encode(self, text: str, parse_special: bool = False) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def token_id(self, name: str) -> int | None: ...


@dataclass(frozen=True)
class Budgets:
    """Token budgets: the local window (prefix, suffix) and the repo context.

    The defaults are the CPU profile, picked by the dev-set eval: everything after the
    cursor is re-evaluated per keystroke, so the suffix stays at the rest of the block, 48
    tokens at most; of the split between window and context, 384/512 beat 256/640 (the
    local window matters more to the 0.5B than more context). The GPU profile is larger and
    not yet tuned by the eval.
    """

    prefix_tokens: int = 384
    suffix_tokens: int = 48
    context_tokens: int = 512

    @classmethod
    def for_device(cls, device: str) -> "Budgets":
        if device == "cpu":
            return cls()
        return cls(prefix_tokens=2048, suffix_tokens=512, context_tokens=4096)


@dataclass(frozen=True)
class Window:
    """The local window: prefix lines [start_line, cursor) and suffix up to end_line."""

    start_line: int
    end_line: int  # exclusive
    prefix: str
    suffix: str


@dataclass
class Prompt:
    """Prompt ids plus what went into it."""

    ids: list[int]
    text: str  # rendering with control tokens spelled out, for --show-prompt
    mode: str  # repo | fim | prefix
    snippets: list[Snippet] = field(default_factory=list)
    context_end: int = 0  # ids before this index do not depend on the cursor's window
    prefix: str = ""
    suffix: str = ""


def local_window(text: str, line: int, col: int, count_tokens: Callable[[str], int],
                 budgets: Budgets, anchor: int | None = None) -> Window:
    """The prefix/suffix around the cursor, sized in tokens, whole lines except at the cursor;
    the suffix ends with the cursor's block.

    ``anchor`` is the start line of the previous window in this file: it is kept while the
    prefix from it still fits the budget and fills at least half of it, so moving around nearby
    does not move the start of the prompt (what the runtime's prefix cache reuses).
    """
    lines = text.split("\n")
    line = max(0, min(line, len(lines) - 1))
    col = max(0, min(col, len(lines[line])))
    # a huge line (minified code, data) is cut to what its budget could ever hold
    current_prefix = lines[line][:col][-budgets.prefix_tokens * MAX_CHARS_PER_TOKEN:]
    current_suffix = lines[line][col:][:budgets.suffix_tokens * MAX_CHARS_PER_TOKEN]
    while count_tokens(current_prefix) > budgets.prefix_tokens:
        current_prefix = current_prefix[max(1, len(current_prefix) // 4):]
    while current_suffix and count_tokens(current_suffix) > budgets.suffix_tokens:
        current_suffix = current_suffix[: len(current_suffix) * 3 // 4]

    used = used_at_cursor = count_tokens(current_prefix)
    start = line
    while start > 0:
        cost = count_tokens(lines[start - 1] + "\n")
        if used + cost > budgets.prefix_tokens:
            break
        used += cost
        start -= 1
    if start > 0:  # snap forward so the window start stays put while the user types
        start = min(line, -(-start // WINDOW_SNAP_LINES) * WINDOW_SNAP_LINES)
    if anchor is not None and anchor != start and _anchor_fits(lines, anchor, line, used_at_cursor, count_tokens, budgets):
        start = anchor
    start = code_start(lines, start, line)
    prefix = "\n".join(lines[start:line] + [current_prefix])

    suffix_parts = [current_suffix]
    used = count_tokens(current_suffix)
    end = line + 1
    floor = block_floor(lines[line], col)
    while end < len(lines):
        if leaves_block(lines[end], floor):
            break
        cost = count_tokens("\n" + lines[end])
        if used + cost > budgets.suffix_tokens:
            break
        suffix_parts.append(lines[end])
        used += cost
        end += 1
    return Window(start, end, prefix, "\n".join(suffix_parts))


def _anchor_fits(lines: list[str], anchor: int, line: int, used: int, count_tokens: Callable[[str], int],
                 budgets: Budgets) -> bool:
    """Whether a window from line ``anchor`` to the cursor fills half to all of the prefix budget
    (``used``: the tokens of the cursor line's part before the cursor)."""
    if not 0 <= anchor <= line:
        return False
    for index in range(anchor, line):
        used += count_tokens(lines[index] + "\n")
        if used > budgets.prefix_tokens:
            return False
    return anchor == 0 or used * 2 >= budgets.prefix_tokens


def group_snippets(snippets: list[Snippet]) -> list[tuple[str, list[Snippet]]]:
    """Snippets grouped per file; files ordered by their most relevant source (least
    relevant first), then path."""
    by_path: dict[str, list[Snippet]] = {}
    for snippet in snippets:
        by_path.setdefault(snippet.path, []).append(snippet)
    ordered = sorted(by_path.items(),
                     key=lambda item: (max(SOURCE_ORDER.get(s.source, 0) for s in item[1]), item[0]))
    return [(path, sorted(group, key=lambda s: s.start_line)) for path, group in ordered]


def _join_snippets(group: list[Snippet]) -> str:
    """A file's snippets in file order: statements that follow each other (imports) stay
    together, other pieces are set apart by a blank line. No "..." marks the gaps: the model
    copies such marks into its completions."""
    parts = [group[0].text.rstrip("\n")] if group else []
    for before, snippet in zip(group, group[1:]):
        if snippet.start_line > before.end_line and not (
                snippet.source == before.source == "imports"):
            parts.append("")
        parts.append(snippet.text.rstrip("\n"))
    return "\n".join(parts)


class PromptBuilder:
    """Turns a window, retrieved snippets and the current file's head into prompt ids."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        special = {name: tokenizer.token_id(name) for name in (
            "<|repo_name|>", "<|file_sep|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")}
        self.special = {name: tid for name, tid in special.items() if tid is not None}
        has_fim = all(n in self.special for n in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"))
        has_repo = has_fim and "<|repo_name|>" in self.special and "<|file_sep|>" in self.special
        self.mode = "repo" if has_repo else "fim" if has_fim else "prefix"

    def build(self, rel_path: str, repo_name: str, window: Window,
              snippets: list[Snippet] = (), head: list[Snippet] = ()) -> Prompt:
        ids: list[int] = []
        shown: list[str] = []

        def text(value: str) -> None:
            if value:
                ids.extend(self.tokenizer.encode(value, parse_special=False))
                shown.append(value)

        def control(name: str) -> None:
            ids.append(self.special[name])
            shown.append(name)

        head_text = _join_snippets(list(head)) + "\n" if head else ""
        if head and head[-1].end_line != window.start_line:
            head_text += "\n"  # lines left out before the window
        groups = group_snippets(list(snippets))
        if self.mode == "repo":
            control("<|repo_name|>")
            text(repo_name + "\n")
            for path, group in groups:
                control("<|file_sep|>")
                text(path + "\n" + _join_snippets(group) + "\n")
            control("<|file_sep|>")
            text(rel_path + "\n")
            control("<|fim_prefix|>")
            context_end = len(ids)
            text(head_text + window.prefix)
            control("<|fim_suffix|>")
            text(window.suffix)
            control("<|fim_middle|>")
        else:
            mark = comment_prefix(rel_path)
            commented = "".join(
                f"{mark} Path: {path}\n" + "".join(f"{mark} {l}\n" for l in _join_snippets(group).split("\n"))
                for path, group in groups)
            if self.mode == "fim":
                control("<|fim_prefix|>")
            text(commented + f"{mark} Path: {rel_path}\n")
            context_end = len(ids)
            text(head_text + window.prefix)
            if self.mode == "fim":
                control("<|fim_suffix|>")
                text(window.suffix)
                control("<|fim_middle|>")
        return Prompt(ids, "".join(shown), self.mode, list(snippets), context_end,
                      window.prefix, window.suffix)
