"""Post-processing: turn a raw model continuation into an inline suggestion.

In order: cut at control tokens, drop control characters, strip stray markdown fences; drop the
indentation the model repeats where the cursor already sits at one; decide single- vs
multi-line from the syntax at the cursor; cut where the enclosing block ends (indentation,
plus brackets for brace languages); cut where the text starts repeating the suffix; balance
closing brackets against the rest of the line; drop repeated lines and whitespace-only text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .context.languages import get_parser
from .context.statements import code_chars, unclosed

CONTROL_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>")
# ASCII control characters other than tab and line ends: never code, and editors show them as ^G.
CONTROL_CHARS_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
FENCE_RE = re.compile(r"^\s*```")
OPENERS, CLOSERS = "([{", ")]}"
PAIRS = dict(zip(CLOSERS, OPENERS))
MAX_LINES = 16
UNCLOSED_LINES = 30  # lines before the cursor searched for a bracket a completion may close
MIN_REPEATED_CHARS = 10  # a completion line equal to a line below this long is a repeat
_BLOCK_OPENER_RE = re.compile(r"(:|\{|\(|\[|=>|->|\bdo|\bthen)\s*$")
_CLOSING_ONLY_RE = re.compile(r"^[\s)\]}>;,'\"`]*$")
_SINGLE_LINE_NODES = ("string", "comment", "template_string", "char_literal", "raw_string")


@dataclass(frozen=True)
class CursorContext:
    """What post-processing needs to know about the text around the cursor."""

    prefix: str  # document text before the cursor (the last lines are enough)
    suffix: str  # document text after the cursor
    language: str | None = None
    multiline: bool | None = None  # None: decide from the syntax at the cursor

    @property
    def line_prefix(self) -> str:
        return self.prefix.rsplit("\n", 1)[-1]

    @property
    def line_suffix(self) -> str:
        return self.suffix.split("\n", 1)[0]


def postprocess(raw: str, ctx: CursorContext, max_lines: int = MAX_LINES) -> str:
    """The suggestion to show for a raw continuation, possibly ""."""
    text = strip_control(raw)
    text = strip_fences(text)
    multiline = ctx.multiline if ctx.multiline is not None else is_multiline_position(ctx)
    lines = text.split("\n")
    lines[0] = drop_repeated_indent(lines[0], ctx)
    if multiline:
        lines = cut_at_block_end(lines, ctx)[:max_lines]
    else:
        lines = first_statement(lines, ctx.line_prefix)
    lines = cut_suffix_repeat(lines, ctx)
    lines = drop_repeated_lines(lines)
    text = "\n".join(lines).rstrip()
    if "\n" not in text:
        text = balance_brackets(text, ctx)
    return text if text.strip() else ""


def strip_control(text: str) -> str:
    """Everything before the first control token (<|endoftext|>, <|file_sep|>, ...), without control characters."""
    match = CONTROL_RE.search(text)
    return CONTROL_CHARS_RE.sub("", text[: match.start()] if match else text)


def strip_fences(text: str) -> str:
    """Drop a leading ```lang line and anything from a closing fence on."""
    lines = text.split("\n")
    if lines and FENCE_RE.match(lines[0]) and lines[0].strip() != "":
        lines = lines[1:]
    for i, line in enumerate(lines):
        if FENCE_RE.match(line):
            return "\n".join(lines[:i])
    return "\n".join(lines)


def drop_repeated_indent(first_line: str, ctx: CursorContext) -> str:
    """The first line without leading whitespace where the cursor already sits at an indentation the
    model indents again (it re-emits the line's indentation): unless that indentation is no deeper than a
    line above that opens a block, which the user may not have indented into yet."""
    before = ctx.line_prefix
    if not before or before.strip() or first_line[:1] not in (" ", "\t"):
        return first_line
    above = next((line for line in reversed(ctx.prefix.split("\n")[:-1]) if line.strip()), "")
    if _BLOCK_OPENER_RE.search(above.rstrip()) and _indent_width(before) <= _indent_width(above):
        return first_line
    return first_line.lstrip(" \t")


def is_multiline_position(ctx: CursorContext) -> bool:
    """Multi-line at a fresh line or after a block opener; single-line mid-line, in strings
    and comments."""
    rest = ctx.line_suffix
    if rest.strip() and not _CLOSING_ONLY_RE.match(rest):
        return False
    if _inside_single_line_node(ctx):
        return False
    before = ctx.line_prefix
    if not before.strip():
        return True
    opener = _BLOCK_OPENER_RE.search(before)
    if opener and rest.strip():  # `f(|)`: arguments go on this line; `{|}` opens a block
        return opener.group(1) in ("{", ":")
    return bool(opener)


def _inside_single_line_node(ctx: CursorContext) -> bool:
    parser = get_parser(ctx.language) if ctx.language else None
    if parser is None:
        return False
    head = ctx.prefix[-4000:]
    source = (head + ctx.suffix[:2000]).encode("utf-8", errors="replace")
    offset = len(head.encode("utf-8", errors="replace"))
    tree = parser.parse(source)
    node = tree.root_node.descendant_for_byte_range(max(0, offset - 1), offset)
    while node is not None:
        if any(kind in node.type for kind in _SINGLE_LINE_NODES) and \
                node.start_byte < offset < node.end_byte:
            return True
        node = node.parent
    return False


def _indent_width(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def _depth(text: str) -> int:
    return sum(text.count(c) for c in OPENERS) - sum(text.count(c) for c in CLOSERS)


def first_statement(lines: list[str], line_prefix: str) -> list[str]:
    """The first line, extended while brackets it opened are still open."""
    kept = [lines[0]]
    depth = _depth(lines[0])
    for line in lines[1:MAX_LINES]:
        if depth <= 0:
            break
        kept.append(line)
        depth += _depth(line)
    return kept


def block_end(lines: list[str], ctx: CursorContext) -> int | None:
    """Index of the first line past the block enclosing the cursor, or None if not seen yet."""
    before = ctx.line_prefix
    floor = _indent_width(before) + 1 if before.strip() else _indent_width(before)
    for i, line in enumerate(lines[1:], 1):
        if line.strip() and _indent_width(line) < floor:
            return i
    return None


def cut_at_block_end(lines: list[str], ctx: CursorContext) -> list[str]:
    """Lines up to where the block enclosing the cursor ends."""
    end = block_end(lines, ctx)
    kept = lines if end is None else lines[:end]
    if end is not None and lines[end].strip()[0] in CLOSERS and \
            not _suffix_closes(ctx, lines[end].strip()):
        kept = lines[:end + 1]  # the block's own closer, which the file lacks
    kept = list(kept)
    while kept and not kept[-1].strip():
        kept.pop()
    return kept or [""]


def _suffix_closes(ctx: CursorContext, closer_line: str) -> bool:
    for line in ctx.suffix.split("\n")[1:]:
        if line.strip():
            return line.strip()[0] == closer_line[0]
    return ctx.line_suffix.strip()[:1] == closer_line[:1]


def cut_suffix_repeat(lines: list[str], ctx: CursorContext) -> list[str]:
    """Stop where the completion starts re-typing what already follows the cursor: the next
    lines, or a longer statement of the code below (``return parser`` once more at the end)."""
    below = [l.strip() for l in ctx.suffix.split("\n")[1:] if l.strip()]
    following = below[:3]
    known = {l for l in below if len(l) >= MIN_REPEATED_CHARS}
    rest = ctx.line_suffix.strip()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if i > 0 and stripped in known and sum(_depth(l) for l in lines[:i]) == 0:
            lines = lines[:i]
            break
        if i > 0 and following and stripped and stripped == following[0] and (
                len(stripped) > 3 or len(following) == 1 or
                [l.strip() for l in lines[i + 1:i + 2]] == following[1:2]):
            lines = lines[:i]
            break
        if i > 0 and rest and len(rest) > 3 and stripped == rest:
            lines = lines[:i]
            break
    if len(lines) == 1 and rest and len(rest) > 1 and lines[0].rstrip().endswith(rest):
        lines = [lines[0].rstrip()[: -len(rest)]]  # re-typed the rest of the line
    return lines


def drop_repeated_lines(lines: list[str]) -> list[str]:
    """Cut a degenerate loop: a non-trivial line repeated right after itself."""
    for i in range(1, len(lines)):
        if lines[i].strip() and len(lines[i].strip()) > 2 and lines[i] == lines[i - 1]:
            return lines[:i]
    return lines


def balance_brackets(text: str, ctx: CursorContext) -> str:
    """Cut where the completion closes a bracket that the rest of the line already closes, or
    one nothing before it opened: `f(` + `x) or (` before `)` gives `x`; `max(1, f(` +
    `len(items))` before `)` keeps both; `x = ` + `g(y))` gives `g(y)`, but after an open
    `f(` on a line above, `y)` stays."""
    open_before = len(unclosed(ctx.line_prefix))
    closed_after = _closers_at_depth_zero(ctx.line_suffix)
    allowance = max(0, open_before - closed_after)
    # nothing left open above either: a closer past the allowance closes nothing
    cut_stray = closed_after or not unclosed("\n".join(ctx.prefix.split("\n")[-UNCLOSED_LINES:]))
    depth = 0
    for i, char in code_chars(text):
        if char in OPENERS:
            depth += 1
        elif char in CLOSERS:
            if depth > 0:
                depth -= 1
            elif allowance > 0:
                allowance -= 1
            else:
                return text[:i].rstrip() if cut_stray else text
    return text


def _closers_at_depth_zero(text: str) -> int:
    depth, closed = 0, 0
    for _, char in code_chars(text):
        if char in OPENERS:
            depth += 1
        elif char in CLOSERS:
            if depth:
                depth -= 1
            else:
                closed += 1
    return closed


class EarlyStop:
    """Watches the streamed continuation and tells when the suggestion is complete, so
    decoding can stop there: at the newline that ends the statement (single-line), or once
    a line leaves the enclosing block (multi-line)."""

    def __init__(self, ctx: CursorContext, multiline: bool, max_lines: int = MAX_LINES) -> None:
        self.ctx = ctx
        self.multiline = multiline
        self.max_lines = max_lines
        self.text = ""
        self.done = False

    def on_token(self, token_id: int, piece: str) -> None:
        self.text += piece
        if "\n" in piece and not self.done:
            self.done = self._complete()

    def _complete(self) -> bool:
        lines = strip_fences(strip_control(self.text)).split("\n")[:-1]  # finished lines
        if not lines:
            return False
        if not self.multiline:
            kept = first_statement(lines, self.ctx.line_prefix)
            return sum(_depth(line) for line in kept) <= 0 or len(kept) < len(lines)
        return len(lines) > self.max_lines or block_end(lines, self.ctx) is not None
