"""Build FIM cases from a Python project: mask lines, blocks and call arguments that use names
imported from the project's other modules.

    python -m qwen_lsp.eval.make_cases --repo DIR --out cases.jsonl
    python -m qwen_lsp.eval.make_cases --package pygls --out cases.jsonl
    python -m qwen_lsp.eval.make_cases --commit REV --out cases.jsonl  # this repository at REV
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys

import tree_sitter as ts

from ..context.languages import get_parser
from ..context.symbols import IDENT_RE
from ..context.workspace_index import WorkspaceIndex
from .cases import GIT_PREFIX, PACKAGE_PREFIX, Case, resolve_workspace

KINDS = ("line", "call_args", "block")


def cross_module_names(index: WorkspaceIndex, rel: str) -> set[str]:
    """Local names of the file bound to something defined in another module of the project."""
    symbols = index.symbols(rel)
    names = set()
    for imp in symbols.imports if symbols else ():
        for local, original in imp.bindings.items():
            if local == "*":
                continue
            full = f"{imp.module}.{original}" if original and imp.module else (original or imp.module)
            target = (index.resolve_module(imp.module, rel, imp.level)
                      or index.resolve_module(full, rel, imp.level))
            if target and target != rel:
                names.add(local)
    return names


def _uses(node: ts.Node, names: set[str]) -> bool:
    text = node.text.decode("utf-8", errors="replace")
    return any(name in names for name in IDENT_RE.findall(text))


def _walk(node: ts.Node):
    yield node
    for child in node.named_children:
        yield from _walk(child)


def candidates(text: str, names: set[str]) -> dict[str, list[tuple[int, int, str]]]:
    """(line, col, middle) spans per kind."""
    tree = get_parser("python").parse(text.encode("utf-8"))
    found: dict[str, list[tuple[int, int, str]]] = {kind: [] for kind in KINDS}
    source = text.encode("utf-8")

    def span(start: ts.Node | int, end_byte: int) -> tuple[int, int, str] | None:
        start_byte = start if isinstance(start, int) else start.start_byte
        middle = source[start_byte:end_byte].decode("utf-8", errors="strict")
        line_start = source.rfind(b"\n", 0, start_byte) + 1
        col = len(source[line_start:start_byte].decode("utf-8"))
        line = source.count(b"\n", 0, start_byte)
        return (line, col, middle) if middle.strip() else None

    for node in _walk(tree.root_node):
        if node.type in ("expression_statement", "return_statement") and \
                node.start_point[0] == node.end_point[0] and _uses(node, names):
            child = node.named_children[0] if node.named_children else None
            if child is not None and child.type in ("string", "concatenated_string"):
                continue  # a docstring: prose, not code that uses the other module
            if child is not None and child.type == "assignment" and child.child_by_field_name("right"):
                right = child.child_by_field_name("right")
                if _uses(right, names):
                    item = span(right, node.end_byte)
                else:
                    continue
            else:
                item = span(node, node.end_byte)
            if item and 8 <= len(item[2]) <= 120:
                found["line"].append(item)
        elif node.type == "call" and node.start_point[0] == node.end_point[0]:
            function = node.child_by_field_name("function")
            args = node.child_by_field_name("arguments")
            if function is None or args is None or args.type != "argument_list":
                continue
            base = IDENT_RE.match(function.text.decode("utf-8", errors="replace"))
            if base and base.group(0) in names and args.named_child_count:
                item = span(args.start_byte + 1, args.end_byte - 1)
                if item and 3 <= len(item[2]) <= 80:
                    found["call_args"].append(item)
        elif node.type == "function_definition":
            body = node.child_by_field_name("body")
            if body is None or not body.named_children:
                continue
            statements = [s for s in body.named_children if s.type != "comment"]
            first = statements[0] if statements else None
            if first is not None and first.type == "expression_statement" and \
                    first.named_children and first.named_children[0].type == "string":
                statements = statements[1:]  # keep the docstring visible
            lines = body.end_point[0] - (statements[0].start_point[0] if statements else 0) + 1
            if statements and 2 <= lines <= 8 and _uses(body, names):
                item = span(statements[0], body.end_byte)
                if item and len(item[2]) <= 400:
                    found["block"].append(item)
    return found


def make_cases(workspace: str, per_kind: int, seed: int = 0, per_file: int = 2) -> list[Case]:
    """Up to ``per_kind`` cases of each kind, spread over the project's files."""
    index = WorkspaceIndex(resolve_workspace(workspace))
    index.index_all()
    rng = random.Random(seed)
    pools: dict[str, list[tuple[str, int, int, str]]] = {kind: [] for kind in KINDS}
    for rel in sorted(index.files()):
        if not rel.endswith(".py"):
            continue
        names = cross_module_names(index, rel)
        if not names:
            continue
        for kind, items in candidates(index.text(rel), names).items():
            rng.shuffle(items)
            pools[kind].extend((rel, *item) for item in items[:per_file])
    cases = []
    if workspace.startswith(GIT_PREFIX):
        label = "qwen-lsp@" + workspace[len(GIT_PREFIX):][:8]
    else:
        label = workspace.removeprefix(PACKAGE_PREFIX).rstrip("/").rsplit("/", 1)[-1]
    for kind in KINDS:
        pool = sorted(pools[kind])
        rng.shuffle(pool)
        for rel, line, col, middle in sorted(pool[:per_kind]):
            cases.append(Case(f"{label}/{rel}:{line}:{col}:{kind}", kind, workspace, rel,
                              line, col, middle))
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--repo", help="project directory")
    source.add_argument("--package", help="installed Python package (case paths stay portable)")
    source.add_argument("--commit", help="this repository at a commit (a project no model has "
                                         "seen; extracted into the cache on use)")
    parser.add_argument("--out", required=True, help="JSONL file to write ('-' for stdout)")
    parser.add_argument("--per-kind", type=int, default=10)
    parser.add_argument("--per-file", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args(argv)
    if args.commit:
        commit = subprocess.run(["git", "rev-parse", "--verify", args.commit + "^{commit}"],
                                check=True, capture_output=True, text=True).stdout.strip()
        workspace = GIT_PREFIX + commit
    else:
        workspace = args.repo if args.repo else PACKAGE_PREFIX + args.package
    cases = make_cases(workspace, args.per_kind, args.seed, args.per_file)
    lines = "".join(case.to_json() + "\n" for case in cases)
    if args.out == "-":
        sys.stdout.write(lines)
    else:
        with open(args.out, "a" if args.append else "w", encoding="utf-8") as handle:
            handle.write(lines)
    print(f"{len(cases)} cases from {workspace}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
