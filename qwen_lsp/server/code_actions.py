"""Code actions: cheap to list (titles only), the model runs when the client resolves one.

Each action is planned as a *virtual document*: the current text rewritten so that the
cursor sits where the new code goes (an emptied function body, an opened docstring, a new
test function). The completer fills that cursor like any completion, and ``finish`` turns
the generated text into the edit to apply.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BODY, TODO, DOCSTRING, TEST = "body", "todo", "docstring", "test"
TITLES = {
    BODY: "Complete this function body",
    TODO: "Fill in this TODO",
    DOCSTRING: "Write a docstring",
    TEST: "Write a unit test for this function",
}
_TODO_LINE = re.compile(r"^(\s*)(#|//|--|;+|/\*)\s*(TODO|FIXME)\b.*$")
_PLACEHOLDER_CALLS = {"NotImplementedError"}


@dataclass(frozen=True)
class Edit:
    """Replace ``start..end`` (offsets) of the file at ``path`` (None: the document) by ``text``."""

    start: int
    end: int
    text: str
    path: str | None = None
    create: bool = False


@dataclass(frozen=True)
class Plan:
    """A virtual document to complete and how to turn the completion into edits."""

    text: str
    offset: int
    path: str | None
    finish: Callable[[str], list[Edit]]
    multiline: bool = True


def _line_offsets(text: str) -> list[int]:
    offsets, pos = [0], 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        offsets.append(pos)
    return offsets


def _functions(text: str) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return []
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _innermost(text: str, line: int) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The innermost function whose lines contain 0-based ``line``."""
    best = None
    for fn in _functions(text):
        first = min([fn.lineno] + [d.lineno for d in fn.decorator_list]) - 1
        if first <= line <= fn.end_lineno - 1 and (best is None or fn.lineno > best.lineno):
            best = fn
    return best


def _docstring_node(fn) -> ast.stmt | None:
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def _is_placeholder(stmt: ast.stmt, lines: list[str]) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis:
        return True
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id in _PLACEHOLDER_CALLS
    return False


def _empty_body(fn, lines: list[str]) -> bool:
    body = fn.body[1:] if _docstring_node(fn) else fn.body
    if fn.body[0].lineno == fn.lineno:  # one-line def
        return False
    return all(_is_placeholder(s, lines) for s in body)


def _body_indent(fn, lines: list[str]) -> str:
    line = lines[fn.body[0].lineno - 1]
    return line[: len(line) - len(line.lstrip())]


def available(text: str, language_id: str, line: int) -> list[str]:
    """Kinds of the actions that apply at 0-based ``line``."""
    kinds = []
    lines = text.splitlines()
    if language_id == "python":
        fn = _innermost(text, line)
        if fn is not None:
            if _empty_body(fn, lines):
                kinds.append(BODY)
            if _docstring_node(fn) is None and fn.body[0].lineno != fn.lineno:
                kinds.append(DOCSTRING)
            if not fn.name.startswith("test"):
                kinds.append(TEST)
    if 0 <= line < len(lines) and _TODO_LINE.match(lines[line]):
        kinds.insert(0, TODO)
    return kinds


def plan(kind: str, text: str, line: int, path: str | None, test_file: Callable[[str, str], tuple[str, str | None]] | None = None) -> Plan | None:
    """The virtual document for action ``kind`` at 0-based ``line``, or None if it no longer applies."""
    lines = text.splitlines()
    starts = _line_offsets(text)
    if kind == TODO:
        if not (0 <= line < len(lines)) or not (m := _TODO_LINE.match(lines[line])):
            return None
        indent = m.group(1)
        end = starts[line] + len(lines[line])
        virtual = text[:end] + "\n" + indent + text[end:]
        at = end + 1 + len(indent)

        def finish_todo(code: str) -> list[Edit]:
            return [Edit(starts[line], end, indent + code.strip("\n"))]

        return Plan(virtual, at, path, finish_todo)
    fn = _innermost(text, line)
    if fn is None:
        return None
    indent = _body_indent(fn, lines)
    doc_node = _docstring_node(fn)
    if kind == BODY:
        if not _empty_body(fn, lines):
            return None
        first = (doc_node.end_lineno if doc_node else fn.body[0].lineno - 1)
        start, end = starts[first], starts[fn.end_lineno] if fn.end_lineno < len(starts) else len(text)
        body_text = text[start:end]
        newline = "\n" if body_text.endswith("\n") else ""
        virtual = text[:start] + indent + newline + text[end:]
        at = start + len(indent)

        def finish_body(code: str) -> list[Edit]:
            return [Edit(start, end, indent + code.strip("\n") + newline)]

        return Plan(virtual, at, path, finish_body)
    if kind == DOCSTRING:
        if doc_node is not None:
            return None
        start = starts[fn.body[0].lineno - 1]
        opening = f'{indent}"""'
        virtual = text[:start] + opening + f'\n{indent}"""\n' + text[start:]
        at = start + len(opening)

        def finish_doc(doc: str) -> list[Edit]:
            doc = doc.split('"""', 1)[0].rstrip()
            closing = f"\n{indent}" if "\n" in doc else ""
            return [Edit(start, start, f'{opening}{doc}{closing}"""\n')]

        return Plan(virtual, at, path, finish_doc)
    if kind == TEST and test_file is not None and path is not None:
        test_path, existing = test_file(path, fn.name)
        module = Path(path).stem
        import_line = f"from {module} import {fn.name}\n"
        stub = f"def test_{fn.name}():\n    "
        if existing is None:
            before, at_end = import_line + "\n\n", 0
        else:
            sep = "" if existing.endswith("\n") else "\n"
            before, at_end = sep + "\n\n", len(existing)
        source = ast.get_source_segment(text, fn) or ""
        virtual = f"# {module}.py\n{source}\n\n\n# {Path(test_path).name}\n{existing or ''}{before}{stub}"

        def finish_test(code: str) -> list[Edit]:
            edits = [Edit(at_end, at_end, before + stub + code.strip("\n") + "\n", path=test_path, create=existing is None)]
            if existing is not None and fn.name not in existing:
                edits.insert(0, Edit(0, 0, import_line, path=test_path))
            return edits

        return Plan(virtual, len(virtual), test_path, finish_test)
    return None


def test_path_for(path: str, root: str | None) -> str:
    """``<root>/tests/test_<name>.py`` when the root has a tests/ folder, else next to the file."""
    name = f"test_{Path(path).stem}.py"
    if root is not None and (Path(root) / "tests").is_dir():
        return str(Path(root) / "tests" / name)
    return str(Path(path).with_name(name))
