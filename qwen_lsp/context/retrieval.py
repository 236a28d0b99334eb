"""Context retrieval: what the code at the cursor refers to, ranked and cut to a token budget.

Sources, strongest first: definitions of the names used near the cursor (imports resolved to
their files, then same-named definitions elsewhere in the repo; the call the cursor is in
first, the file's other project imports after them); calls of that function in other files;
the sibling test or implementation file; recently edited/viewed regions; chunks similar by
identifier overlap (of other files, and of the current file outside the local window).
The current file's imports, enclosing definitions and the definitions above the local window
it uses come back apart, as a ``head`` for the prompt builder to put before the window (those
below it go with the other files' context, keeping the file's order).
"""

from __future__ import annotations

import builtins
import keyword
import os
import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from .languages import comment_prefix, language_for_path
from .recent import RecentRegions
from .statements import (DEFINITION_RE, TRIPLE_QUOTE_RE, block_floor, closers, code_start,
                         indent_width, leaves_block, open_string)
from .symbols import IDENT_RE, Definition, FileSymbols, Import, extract_symbols, short_doc
from .usages import MAX_CALL_LINES, call_sites, callee_at
from .workspace_index import WorkspaceIndex

NEAR_LINES_BEFORE = 30
NEAR_LINES_AFTER = 5
FAR_IMPORT_WEIGHT = 0.2  # a name the file imports from the project but not used near the cursor
CALLEE_WEIGHT = 3.0  # added to the name of the call the cursor is in
NAMESAKE_WEIGHT = 1.0  # added to an import named like a name on the cursor's line: reader, GGUFReader
CALL_SITES = 3  # calls of that name elsewhere shown
CONSTANT_WEIGHT = 0.3  # a module-level assignment (alias, constant) says little beyond its name
SIMILAR_AT_LINE_START = 2.0  # similar code weighs more where a new statement starts
WINDOW_CHUNKS = 4  # similar chunks of the current file in the window, found and passed over
MAX_OUTLINE_MEMBERS = 24
CONTAINER_KINDS = ("class", "interface", "module", "type")  # outlines list their members
MAX_CHARS_PER_TOKEN = 8  # code rarely packs more characters into one token
DEFINITION_SOURCES = ("import", "local", "repo", "outline")  # cut to fit rather than left out
MIN_CUT_TOKENS = 48  # a definition cut shorter than this says too little
SHORT_MEMBER_LINES = 3  # members this short keep their text in a class outline
BODY_HEAD_LINES = 6  # a long function shows its header, docstring and this many body lines
_SELF_ASSIGN_RE = re.compile(r"\s*self\.[A-Za-z_][A-Za-z0-9_]*\s*(:[^=]+)?=[^=]")
_FIELD_RE = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*(:[^=]+)?(=[^=]|$)")
_ATTR_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
COMMON_WORDS = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | frozenset("""
self cls this super function const let var return if else elif for while class struct impl fn
pub func package import from export default new delete typeof instanceof int void char string
bool float double long short unsigned signed static final public private protected abstract
interface extends implements type enum match case switch break continue try catch except finally
throw throws raise async await yield def lambda nil null undefined true false mut ref use mod
crate std namespace template typename auto size_t uint8_t uint32_t int32_t int64_t err error
go defer chan map range select struct include define ifdef ifndef endif args kwargs
""".split())
BUILTIN_METHODS = frozenset(name for kind in (str, bytes, list, dict, set, tuple, int, float)
                            for name in dir(kind) if not name.startswith("_"))

# ranking weights per source; definitions of what the cursor uses come first
SOURCE_WEIGHT = {"import": 3.0, "local": 2.4, "repo": 1.6, "sibling": 1.0, "recent": 1.2,
                 "similar": 0.8, "usage": 2.0}


@dataclass
class Snippet:
    """A piece of another file (or of the current one, for ``head``) to show the model."""

    path: str
    start_line: int
    end_line: int  # exclusive
    text: str
    source: str  # import | local | repo | usage | sibling | recent | similar | outline | imports
    score: float
    tokens: int = 0


@dataclass
class RetrievalResult:
    """Chosen snippets of other files, the current file's head, and bookkeeping."""

    snippets: list[Snippet]
    head: list[Snippet]
    tokens: int
    considered: int
    query: list[str] = field(default_factory=list)


class ContextRetriever:
    """Ranks candidate snippets for a cursor position and fits them into a token budget."""

    def __init__(self, index: WorkspaceIndex, count_tokens: Callable[[str], int],
                 recent: RecentRegions | None = None, similar_top_k: int = 6) -> None:
        self.index = index
        self.count_tokens = count_tokens
        self.recent = recent
        self.similar_top_k = similar_top_k
        self._symbols_cache: tuple[str, str, FileSymbols] | None = None

    def retrieve(self, rel_path: str, text: str, line: int, col: int,
                 window: tuple[int, int], budget_tokens: int,
                 head_budget_tokens: int | None = None) -> RetrievalResult:
        """Context for the cursor at (line, col) of ``text``; ``window`` = local window lines
        [start, end) already in the prompt, which snippets must not repeat."""
        lines = text.split("\n")
        line = max(0, min(line, len(lines) - 1))
        col = max(0, min(col, len(lines[line])))
        symbols = self._symbols(rel_path, text)
        weights, attrs = _query(lines, line, col)
        callee = callee_at("\n".join(lines[max(0, line - MAX_CALL_LINES):line] + [lines[line][:col]]))
        if callee and callee in COMMON_WORDS | BUILTIN_METHODS and not self.index.definitions_named(callee):
            callee = None  # `"{}".format(`, `d.get(`: how other code calls it says nothing here
        if callee:
            weights[callee] += CALLEE_WEIGHT
        window_lines = {l.strip() for l in lines[window[0]:window[1]] if l.strip()}

        definitions = self._definitions(rel_path, lines, symbols, weights, attrs, window,
                                        lines[line][:col])
        above = sorted((s for s in definitions if s.source == "local" and s.start_line < window[0]),
                       key=lambda s: -s.score)  # the head keeps the file's order
        candidates = [s for s in definitions if s not in above]
        candidates += self._usages(rel_path, callee) if callee else []
        candidates += self._sibling(rel_path)
        candidates += self._recent(rel_path)
        fresh_line = not lines[line][:col].strip()  # a new statement: what it is, is open
        candidates += self._similar(rel_path, lines, line, col, window,
                                    SIMILAR_AT_LINE_START if fresh_line else SOURCE_WEIGHT["similar"])
        head = self._head(rel_path, lines, symbols, line, col, window, weights) + above

        if head_budget_tokens is None:
            head_budget_tokens = budget_tokens // 3
        head = self._fit(head, head_budget_tokens, window_lines, keep_order=True)
        head.sort(key=lambda s: s.start_line)  # the current file's pieces in file order
        snippets = self._fit(candidates, budget_tokens - sum(s.tokens for s in head),
                             window_lines)
        return RetrievalResult(snippets, head, sum(s.tokens for s in snippets + head),
                               len(candidates), [name for name, _ in weights.most_common(12)])

    # --- candidates ------------------------------------------------------------------------

    def _symbols(self, rel_path: str, text: str) -> FileSymbols:
        cached = self._symbols_cache
        if cached and cached[0] == rel_path and cached[1] == text:
            return cached[2]
        indexed = self.index.symbols(rel_path)
        if indexed is not None and self.index.text(rel_path) == text:
            return indexed  # the editor's didChange already re-indexed this buffer
        symbols = extract_symbols(rel_path, text, language_for_path(rel_path))
        self._symbols_cache = (rel_path, text, symbols)
        return symbols

    def _definitions(self, rel_path: str, lines: list[str], symbols: FileSymbols, weights: Counter,
                     attrs: dict[str, set[str]], window: tuple[int, int],
                     typed: str) -> list[Snippet]:
        """Definitions of the names the cursor uses, of the file's other project imports (far
        ones weigh little) and of the imports named like a name on the cursor's line
        (``self.position_codec = `` wants ``PositionCodec``)."""
        bindings: dict[str, tuple[str, str]] = {}  # local name -> (resolved file, original name)
        module_bindings: dict[str, str] = {}  # local name -> module file
        for imp in symbols.imports:
            for local, original in imp.bindings.items():
                if local == "*":
                    continue
                if original in ("", "default"):
                    target = self.index.resolve_module(imp.module, rel_path, imp.level)
                    if target and original == "":
                        module_bindings[local] = target
                    elif target:
                        bindings[local] = (target, local)
                    continue
                sub = self.index.resolve_module(
                    f"{imp.module}.{original}" if imp.module else original, rel_path, imp.level)
                if sub and imp.level + len(imp.module) > 0:
                    module_bindings[local] = sub  # `from pkg import module`
                    continue
                target = self.index.resolve_module(imp.module, rel_path, imp.level)
                if target:
                    bindings[local] = (target, original)

        found: list[Snippet] = []
        seen: set[tuple[str, int]] = set()

        def add(path: str, definition: Definition, source: str, weight: float) -> None:
            key = (path, definition.start_line)
            if key in seen:
                return
            seen.add(key)
            found.append(self._render(path, definition, source, weight))

        local_defs = {d.name: d for d in symbols.definitions  # top level, even mid-edit
                      if d.parent is None and d.start_line < len(lines)
                      and not lines[d.start_line][:1].isspace()}
        defined_here = {d.name for d in symbols.definitions}
        ranked = Counter({name: FAR_IMPORT_WEIGHT for name in bindings})  # all it imports
        ranked.update({name: weight for name, weight in weights.items()
                       if weight > ranked[name]})
        on_line = {_words(name) for name in IDENT_RE.findall(typed) if name not in COMMON_WORDS}
        ranked.update({name: NAMESAKE_WEIGHT for name in bindings if name not in typed and any(
            _same_ending(_words(name), words) for words in on_line)})
        for name, weight in ranked.most_common():
            if name in bindings:
                path, original = bindings[name]
                for definition in self._defs_in(path, original):
                    add(path, definition, "import", weight)
            elif name in module_bindings:
                path = module_bindings[name]
                for attr in sorted(attrs.get(name, ())):
                    for definition in self._defs_in(path, attr):
                        add(path, definition, "import", weight)
            elif name in local_defs:
                definition = local_defs[name]
                if definition.end_line < window[0] or definition.start_line >= window[1]:
                    add(rel_path, definition, "local", weight)
            elif name not in COMMON_WORDS and name not in defined_here:
                elsewhere = [(p, d) for p, d in self.index.definitions_named(name) if p != rel_path]
                if 0 < len(elsewhere) <= 3:
                    same_dir = os.path.dirname(rel_path)
                    for path, definition in elsewhere:
                        near = 1.0 if os.path.dirname(path) == same_dir else 0.7
                        add(path, definition, "repo", weight * near / len(elsewhere))
        return found

    def _defs_in(self, path: str, name: str) -> list[Definition]:
        file_symbols = self.index.symbols(path)
        if file_symbols is None:
            return []
        return [d for d in file_symbols.definitions if d.name == name and d.parent is None][:1]

    def _render(self, path: str, definition: Definition, source: str, weight: float) -> Snippet:
        """A definition as its whole text when short, else signature, docstring and members."""
        text = self.index.text(path) or ""
        lines = text.split("\n")
        start, end = definition.start_line, definition.end_line + 1
        if definition.body:
            body = "\n".join(lines[start:end])
        else:
            body = self._outline(path, definition, lines)
        if definition.kind == "constant":
            weight *= CONSTANT_WEIGHT
        return Snippet(path, start, end, body, source, SOURCE_WEIGHT[source] * weight)

    def _outline(self, path: str, definition: Definition, lines: list[str],
                 file_symbols: FileSymbols | None = None, before: int | None = None) -> str:
        """Header, first docstring line, then (for classes) fields and members, each as its
        header and docstring line or first body line: ``__init__`` keeps its attribute
        assignments, short members their text; a long function its first body lines.
        ``before``: only the fields and members that end above this line."""
        python = path.endswith((".py", ".pyi"))
        if definition.kind == "constant":  # its first lines, brackets closed: a value reads whole
            head = lines[definition.start_line:definition.start_line + 1 + BODY_HEAD_LINES]
            close = closers("\n".join(head))
            return "\n".join(head + ([_indent(head[0]) + close] if close else []))
        indent = _indent(lines[definition.start_line]) if definition.start_line < len(lines) else ""
        inner = _inner_indent(lines, definition, indent, "    " if python else "  ")
        header = indent + definition.signature.strip()
        parts = [header + (":" if python and not header.endswith(":") else "")]
        doc = _doc_line(definition.doc) if python else short_doc(definition.doc)
        if doc:
            parts.append(inner + doc)
        file_symbols = file_symbols or self.index.symbols(path)
        members = [d for d in (file_symbols.definitions if file_symbols else [])
                   if definition.kind in CONTAINER_KINDS and d.parent == definition.name
                   and definition.start_line < d.start_line <= definition.end_line]
        end = len(lines) if before is None else before
        if python and members:
            parts += _fields(lines, definition, members, inner, end)
        for member in [m for m in members if m.end_line < end][:MAX_OUTLINE_MEMBERS]:
            member_lines = lines[member.start_line:member.end_line + 1]
            if not python:
                parts.append(_indent(member_lines[0]) + member.signature.strip())
            elif member.body and len(member_lines) <= SHORT_MEMBER_LINES:
                parts.append("\n".join(member_lines))
            elif member.name == "__init__":
                parts.append(_indent(member_lines[0]) + member.signature.strip())
                parts += [l for l in member_lines[1:]
                          if _SELF_ASSIGN_RE.match(l) and _depth(l) == 0][:12] or \
                    _body_head(member, member_lines, 1)
            else:
                parts.append(_indent(member_lines[0]) + member.signature.strip())
                member_doc = _doc_line(member.doc)
                member_inner = _inner_indent(lines, member, _indent(member_lines[0]), "    ")
                parts += [member_inner + member_doc] if member_doc else \
                    _body_head(member, member_lines, 1)
        if not members and python:
            parts += _body_head(definition, lines[definition.start_line:definition.end_line + 1],
                                BODY_HEAD_LINES)
        elif not members:
            parts.append(inner + comment_prefix(path) + " ...")
        return "\n".join(parts)

    def _usages(self, rel_path: str, callee: str) -> list[Snippet]:
        """How other files call the function the cursor is calling."""
        sites = call_sites(self.index.chunks, self.index.text, callee, rel_path, CALL_SITES)
        return [Snippet(s.path, s.start_line, s.end_line, s.text, "usage",
                        SOURCE_WEIGHT["usage"] * CALLEE_WEIGHT / (1 + rank))
                for rank, s in enumerate(sites)]

    def _sibling(self, rel_path: str) -> list[Snippet]:
        for candidate in sibling_paths(rel_path):
            symbols = self.index.symbols(candidate)
            if symbols is None or not symbols.definitions:
                continue
            text = self.index.text(candidate) or ""
            lines = text.split("\n")
            signatures = [_indent(lines[d.start_line]) + d.signature.strip()
                          for d in symbols.definitions[:40] if d.start_line < len(lines)]
            return [Snippet(candidate, 0, len(lines), "\n".join(signatures), "sibling",
                            SOURCE_WEIGHT["sibling"])]
        return []

    def _recent(self, rel_path: str) -> list[Snippet]:
        if self.recent is None:
            return []
        found = []
        for rank, region in enumerate(self.recent.regions(exclude_path=rel_path)[:6]):
            text = self.index.text(region.path)
            if text is None:
                continue
            lines = text.split("\n")
            body = "\n".join(lines[region.start_line:region.end_line])
            if body.strip():
                found.append(Snippet(region.path, region.start_line,
                                     min(region.end_line, len(lines)), body, "recent",
                                     SOURCE_WEIGHT["recent"] / (1 + rank)))
        return found

    def _similar(self, rel_path: str, lines: list[str], line: int, col: int,
                 window: tuple[int, int], weight: float) -> list[Snippet]:
        """Chunks like the code at the cursor (its line and the lines above it from the header
        of the definition it is in: the one before says nothing of it), in other files and in
        the current file outside the window (its sibling functions, the code below the suffix)."""
        start, floor = max(0, line - 12), block_floor(lines[line], col)
        header = next((n for n in range(line - 1, start - 1, -1)
                       if DEFINITION_RE.match(lines[n]) and indent_width(lines[n]) < floor), start)
        query = Counter(IDENT_RE.findall("\n".join(lines[header:line] + [lines[line][:col]])))
        for word in COMMON_WORDS & query.keys():
            del query[word]
        found = []
        hits = [(score, chunk) for score, chunk in self.index.chunks.search(
                    query, self.similar_top_k + WINDOW_CHUNKS)
                if chunk.path != rel_path or chunk.end_line <= window[0]
                or chunk.start_line >= window[1]][:self.similar_top_k]
        top = hits[0][0] if hits else 1.0
        for score, chunk in hits:
            text = self.index.text(chunk.path)
            if text is None:
                continue
            file_lines = text.split("\n")
            start = code_start(file_lines, chunk.start_line, chunk.end_line)
            if open_string(file_lines, start):
                continue  # all of it inside one docstring
            end = _whole_end(file_lines, start, chunk.end_line)
            body = "\n".join(file_lines[start:end])
            if body.strip():
                found.append(Snippet(chunk.path, start, end, body, "similar", weight * score / top))
        return found

    def _head(self, rel_path: str, lines: list[str], symbols: FileSymbols, line: int, col: int,
              window: tuple[int, int], weights: Counter) -> list[Snippet]:
        """Before the window: the definitions enclosing the cursor (a class as its outline
        above the window: what ``self`` has), then the import statements that bind names used
        near it, then the other project imports."""
        head: list[Snippet] = []
        floor = block_floor(lines[line], col)
        enclosing = [d for d in symbols.definitions
                     if d.start_line < window[0] and _encloses(lines, d, line, floor)]
        for definition in enclosing:
            indent = _indent(lines[definition.start_line])
            body = indent + definition.signature.strip()
            if definition.kind in CONTAINER_KINDS:
                body = self._outline(rel_path, definition, lines, symbols, window[0])
            else:
                if rel_path.endswith(".py") and not body.endswith(":"):
                    body += ":"
                if definition.doc:
                    body += "\n" + _inner_indent(lines, definition, indent, "    ") + short_doc(definition.doc)
            head.append(Snippet(rel_path, definition.start_line, definition.start_line + 1,
                                body, "outline", 1.0))
        starts = sorted({imp.line for imp in symbols.imports if imp.line < window[0]
                         and any(name in weights for name in imp.bindings if name != "*")})
        starts += sorted({imp.line for imp in symbols.imports if imp.line < window[0]
                          and imp.line not in starts and self._is_project_import(imp, rel_path)})
        for start in starts:
            end, depth = start, 0
            while end < min(window[0], len(lines)):
                depth += lines[end].count("(") - lines[end].count(")")
                end += 1
                if depth <= 0:
                    break
            statement = textwrap.dedent("\n".join(lines[start:end]))  # `if TYPE_CHECKING:` ones too
            head.append(Snippet(rel_path, start, end, statement, "imports", 1.0))
        return head

    def _is_project_import(self, imp: Import, rel_path: str) -> bool:
        return self.index.resolve_module(imp.module, rel_path, imp.level) is not None

    # --- budget ----------------------------------------------------------------------------

    def _fit(self, candidates: list[Snippet], budget: int, window_lines: set[str],
             keep_order: bool = False) -> list[Snippet]:
        order = candidates if keep_order else sorted(candidates, key=lambda s: -s.score)
        chosen: list[Snippet] = []
        used = 0
        for snippet in order:
            if budget - used < 8:
                break
            if _mostly_in(snippet.text, window_lines) and snippet.source not in ("outline", "imports"):
                continue
            if any(c.path == snippet.path and c.start_line < snippet.end_line
                   and snippet.start_line < c.end_line for c in chosen):
                continue
            if snippet.source not in DEFINITION_SOURCES and \
                    len(snippet.text) > MAX_CHARS_PER_TOKEN * (budget - used):
                continue  # cannot fit: skip without tokenizing
            path_tokens = self.count_tokens(snippet.path) + 2
            snippet.tokens = self.count_tokens(snippet.text) + path_tokens
            room = min(budget - used, max(MIN_CUT_TOKENS, budget // 2))  # one of several
            if snippet.tokens > room:
                if snippet.source not in DEFINITION_SOURCES or room < MIN_CUT_TOKENS:
                    continue
                snippet = self._cut(snippet, room - path_tokens)
                if snippet is None:
                    continue
                snippet.tokens += path_tokens
            chosen.append(snippet)
            used += snippet.tokens
        return chosen

    def _cut(self, snippet: Snippet, budget: int) -> Snippet | None:
        """The definition's first lines that fit (its header, doc and first members), or None."""
        lines = snippet.text.split("\n")
        low, high = 0, len(lines)  # the most lines known to fit, the fewest known not to
        while high - low > 1:
            middle = (low + high) // 2
            if self.count_tokens("\n".join(lines[:middle])) <= budget:
                low = middle
            else:
                high = middle
        while low and (_depth("\n".join(lines[:low])) != 0 or lines[low - 1].rstrip().endswith(":")):
            low -= 1  # end on a whole statement, not inside a signature or on a bare header
        if low < 2:
            return None
        text = "\n".join(lines[:low])
        return Snippet(snippet.path, snippet.start_line, snippet.end_line, text, snippet.source,
                       snippet.score, self.count_tokens(text))


def _query(lines: list[str], line: int, col: int) -> tuple[Counter, dict[str, set[str]]]:
    """Identifiers near the cursor weighted by closeness, and attributes used on each name.
    Below the cursor only its own block counts: the next definition is not what it uses."""
    weights: Counter = Counter()
    attrs: dict[str, set[str]] = {}
    current = lines[line][:col]
    partial = IDENT_RE.search(current[::-1])
    if partial and partial.start() == 0:  # drop the word being typed: it changes every key
        current = current[: len(current) - partial.end()]
    start = max(0, line - NEAR_LINES_BEFORE)
    end, floor = line + 1, block_floor(lines[line], col)
    while end < min(len(lines), line + NEAR_LINES_AFTER + 1) and not leaves_block(lines[end], floor):
        end += 1
    for number in range(start, end):
        text = current if number == line else lines[number]
        closeness = 1.0 / (1 + abs(number - line) / 4)
        for name in IDENT_RE.findall(text):
            if name not in COMMON_WORDS or name[0].isupper():
                weights[name] += closeness
        for base, attr in _ATTR_RE.findall(text):
            attrs.setdefault(base, set()).add(attr)
    return weights, attrs


def _encloses(lines: list[str], definition: Definition, line: int, floor: int) -> bool:
    """Whether the cursor's block (indentation ``floor``) is inside a definition: within its
    lines, or below its last statement and indented deeper than its header with nothing less
    indented between (writing its next statement, which the parse does not count yet)."""
    if definition.end_line >= line:
        return True
    header = indent_width(lines[definition.start_line])
    return floor > header and not any(leaves_block(text, header + 1)
                                      for text in lines[definition.end_line + 1:line])


def _words(name: str) -> tuple[str, ...]:
    """A name's lower-case words: ``GGUFReader`` and ``_gguf_reader`` give (gguf, reader)."""
    return tuple(w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", name)
                 if len(w) > 1)


def _same_ending(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether the shorter of two word lists ends the longer (reader, GGUFReader)."""
    shorter, longer = sorted((a, b), key=len)
    return bool(shorter) and longer[-len(shorter):] == shorter


def _mostly_in(text: str, window_lines: set[str]) -> bool:
    lines = [l.strip() for l in text.split("\n") if l.strip()]
    if not lines:
        return True
    return sum(l in window_lines for l in lines) >= 0.8 * len(lines)


def _doc_line(doc: str) -> str:
    """A docstring's first line of text, as a one-line docstring; "" if none."""
    body = doc.strip().lstrip("rbuRBUf")
    quote = body[:3] if body[:3] in ('"""', "'''") else '"""'
    text = next((l.strip() for l in body.strip("\"'").split("\n") if l.strip()), "")
    text = text.rstrip("\"'").rstrip()
    return f"{quote}{text}{quote}" if text else ""


def _fields(lines: list[str], definition: Definition, members: list[Definition],
            inner: str, before: int) -> list[str]:
    """A class's own assignments and annotations (fields, constants) above line ``before``,
    outside its members and its strings (a docstring's words read like bare annotations)."""
    inside = {n for m in members for n in range(m.start_line, m.end_line + 1)}
    end = min(definition.end_line + 1, len(lines), before)
    inside |= _string_lines(lines, definition.start_line + 1, end)
    return [lines[n] + closers(lines[n]) for n in range(definition.start_line + 1, end)
            if n not in inside and _indent(lines[n]) == inner and _FIELD_RE.match(lines[n])][:12]


def _string_lines(lines: list[str], start: int, end: int) -> set[int]:
    """Lines in [start, end) that open, continue or close a triple-quoted string."""
    found, quote = set(), None
    for n in range(start, end):
        text = lines[n]
        for match in TRIPLE_QUOTE_RE.finditer(text):
            if quote is None:
                quote = match.group(0)
            elif match.group(0) == quote:
                quote = None
            found.add(n)
        if quote is not None:
            found.add(n)
    return found


def _inner_indent(lines: list[str], definition: Definition, indent: str, step: str) -> str:
    """The indentation of a definition's body as the file writes it (tabs stay tabs)."""
    first = definition.start_line + definition.signature.strip().count("\n") + 1
    for text in lines[first:min(definition.end_line + 1, first + 8)]:
        if text.strip():
            inner = _indent(text)
            return inner if len(inner) > len(indent) and inner.startswith(indent) else indent + step
    return indent + step


def _body_head(definition: Definition, def_lines: list[str], count: int) -> list[str]:
    """Up to ``count`` first lines of a Python definition's body after its docstring, whole
    statements only: real code, where a stub's "..." is what a small model copies."""
    first = definition.signature.strip().count("\n") + 1
    strings = _string_lines(def_lines, first, len(def_lines))
    while first in strings:
        first += 1
    rest = [l for l in def_lines[first:] if l.strip()]
    body = rest[:count]
    if body and body[-1].rstrip().endswith(":") and len(rest) > count:
        body.append(rest[count])  # a block header keeps its first line
    while body and (_depth("\n".join(body)) != 0 or body[-1].rstrip().endswith(":")):
        body.pop()  # an open bracket or a block header without its block
    return body


def _whole_end(lines: list[str], start: int, end: int) -> int:
    """``end``, or less so that lines [start, end) end on a whole statement: not inside
    brackets or a docstring, not on a block header, decorator or blank line (the model goes
    on from there)."""
    quotes = [n for n in range(start, end) if TRIPLE_QUOTE_RE.search(lines[n])]
    if len(TRIPLE_QUOTE_RE.findall("\n".join(lines[start:end]))) % 2:
        end = quotes[-1]  # where the string still open at the end starts
    while end > start:
        first = end - 1  # the first line of the last statement
        while first > start and _depth("\n".join(lines[first:end])) < 0:
            first -= 1
        if lines[first].lstrip().startswith("@"):
            end = first
        elif _depth("\n".join(lines[start:end])) > 0 or not lines[end - 1].strip() \
                or lines[end - 1].rstrip().endswith(":"):
            end -= 1
        else:
            return end
    return end


def _depth(text: str) -> int:
    return sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")


def _indent(text: str) -> str:
    return text[: len(text) - len(text.lstrip())]


def sibling_paths(rel_path: str) -> list[str]:
    """Likely test file for an implementation, or implementation for a test file."""
    directory, name = os.path.split(rel_path)
    stem, ext = os.path.splitext(name)
    parent = os.path.dirname(directory)
    found: list[str] = []
    if stem.startswith("test_") or stem.endswith(("_test", ".test", ".spec", "Test")):
        base = stem[5:] if stem.startswith("test_") else re.sub(r"(_test|\.test|\.spec|Test)$", "", stem)
        for d in (directory, parent, os.path.join(parent, "src")):
            found.append(os.path.join(d, base + ext))
    else:
        for d in (directory, os.path.join(directory, "tests"), os.path.join(parent, "tests"),
                  "tests", "test"):
            for test in (f"test_{stem}{ext}", f"{stem}_test{ext}", f"{stem}.test{ext}",
                         f"{stem}.spec{ext}", f"{stem}Test{ext}"):
                found.append(os.path.join(d, test))
    return [os.path.normpath(p).replace(os.sep, "/") for p in found]
