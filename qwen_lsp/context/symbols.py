"""Per-file symbol extraction with tree-sitter: definitions, imports and an identifier profile."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import tree_sitter as ts

from .languages import get_parser, get_tags_query

IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SHORT_BODY_LINES = 12  # definitions at most this long keep their whole text
_MAX_SIGNATURE_CHARS = 400
_MAX_DOC_CHARS = 600


@dataclass(frozen=True)
class Definition:
    """A named definition: where it is and how to show it to the model."""

    name: str
    kind: str  # function, method, class, interface, type, constant, module, macro
    start_line: int  # 0-based, inclusive
    end_line: int  # 0-based, inclusive
    signature: str
    doc: str = ""
    body: str = ""  # whole text when the definition is short, else ""
    parent: str | None = None  # name of the enclosing definition


@dataclass(frozen=True)
class Import:
    """One import: the module it names and the local names it binds (local -> original)."""

    module: str
    bindings: dict[str, str] = field(default_factory=dict)
    level: int = 0  # leading dots of a Python relative import
    line: int = 0


@dataclass
class FileSymbols:
    """Everything the index keeps about one file."""

    path: str  # relative to the workspace root, with forward slashes
    language: str | None
    definitions: list[Definition]
    imports: list[Import]
    identifiers: Counter
    line_count: int


def identifier_profile(text: str) -> Counter:
    """Identifier counts in the text (language-agnostic)."""
    return Counter(IDENT_RE.findall(text))


def extract_symbols(path: str, text: str, language: str | None) -> FileSymbols:
    """Parse a file and extract its definitions and imports; text-only for unknown languages."""
    definitions: list[Definition] = []
    imports: list[Import] = []
    parser = get_parser(language) if language else None
    if parser is not None:
        source = text.encode("utf-8", errors="replace")
        tree = parser.parse(source)
        definitions = _definitions(tree, language)
        imports = _imports(tree.root_node, language)
    return FileSymbols(path, language, definitions, imports, identifier_profile(text),
                       text.count("\n") + 1)


def short_doc(doc: str, max_lines: int = 4) -> str:
    """The first paragraph of a docstring or comment, kept well-formed (quotes closed)."""
    lines = doc.strip().split("\n")
    kept: list[str] = []
    for line in lines[:max_lines]:
        if kept and not line.strip():
            break
        kept.append(line)
    text = "\n".join(kept).rstrip()
    for quote in ('"""', "'''"):
        if text.startswith(quote) and (len(text) < 6 or not text.endswith(quote)):
            if len(kept) == 1:
                return text + quote
            indent = kept[-1][: len(kept[-1]) - len(kept[-1].lstrip())]
            return text + "\n" + indent + quote
    return text


def _text(node: ts.Node | None) -> str:
    return node.text.decode("utf-8", errors="replace") if node is not None and node.text else ""


def _definitions(tree: ts.Tree, language: str) -> list[Definition]:
    query = get_tags_query(language)
    if query is None:
        return []
    found: dict[tuple[int, int], tuple[str, ts.Node, str]] = {}
    for _, captures in ts.QueryCursor(query).matches(tree.root_node):
        names = captures.get("name")
        for key, nodes in captures.items():
            if not key.startswith("definition.") or not names:
                continue
            node = nodes[0]
            found.setdefault((node.start_byte, node.end_byte),
                             (key.split(".", 1)[1], node, _text(names[0])))
    nodes_by_span = sorted(found.values(), key=lambda item: (item[1].start_byte, -item[1].end_byte))
    result = []
    stack: list[tuple[int, str, str]] = []  # (end_byte, name, kind) of enclosing definitions
    for kind, node, name in nodes_by_span:
        while stack and stack[-1][0] <= node.start_byte:
            stack.pop()
        parent = stack[-1][1] if stack else None
        if kind == "function" and stack and stack[-1][2] == "class":
            kind = "method"
        lines = node.end_point[0] - node.start_point[0] + 1
        body = _text(node) if lines <= SHORT_BODY_LINES else ""
        result.append(Definition(
            name=name, kind=kind, start_line=node.start_point[0], end_line=node.end_point[0],
            signature=_signature(node), doc=_doc(node, language), body=body, parent=parent))
        stack.append((node.end_byte, name, kind))
    return result


def _signature(node: ts.Node) -> str:
    """The definition's header: its text up to where its body starts."""
    body = node.child_by_field_name("body")
    text = _text(node)
    if body is not None and body.start_byte > node.start_byte:
        text = text[: body.start_byte - node.start_byte]
    else:
        text = text.split("\n", 1)[0] if node.end_point[0] - node.start_point[0] > 3 else text
    lines = text.rstrip().split("\n")
    while len(lines) > 1 and lines[-1].lstrip().startswith(("#", "//", "/*", "*")):
        lines.pop()  # comments between the header and the body
    return "\n".join(lines).rstrip().rstrip("{").rstrip()[:_MAX_SIGNATURE_CHARS]


def _doc(node: ts.Node, language: str) -> str:
    """Python docstring, or the comment block right above the definition."""
    if language == "python":
        body = node.child_by_field_name("body")
        first = body.named_children[0] if body is not None and body.named_children else None
        if first is not None and first.type == "expression_statement" and first.named_children \
                and first.named_children[0].type == "string":
            return _text(first)[:_MAX_DOC_CHARS]
        return ""
    comments = []
    prev, line = node.prev_named_sibling, node.start_point[0]
    while prev is not None and "comment" in prev.type and prev.end_point[0] >= line - 1:
        comments.append(_text(prev))
        line = prev.start_point[0]
        prev = prev.prev_named_sibling
    return "\n".join(reversed(comments))[:_MAX_DOC_CHARS]


def _imports(root: ts.Node, language: str) -> list[Import]:
    extract = _IMPORT_EXTRACTORS.get(language)
    if extract is None:
        return []
    result: list[Import] = []
    nodes = list(root.children)
    while nodes:
        node = nodes.pop(0)
        if node.type == "ERROR":  # a syntax error while typing wraps the top level
            nodes[:0] = node.children
        else:
            result.extend(extract(node))
    return result


def _python_imports(node: ts.Node) -> list[Import]:
    line = node.start_point[0]
    if node.type == "import_statement":
        result = []
        for child in node.named_children:
            if child.type == "aliased_import":
                module = _text(child.child_by_field_name("name"))
                result.append(Import(module, {_text(child.child_by_field_name("alias")): ""}, 0, line))
            elif child.type == "dotted_name":
                module = _text(child)
                result.append(Import(module, {module.split(".")[0]: ""}, 0, line))
        return result
    if node.type == "import_from_statement":
        module_node = node.child_by_field_name("module_name")
        module, level = _text(module_node), 0
        if module_node is not None and module_node.type == "relative_import":
            level = len(module) - len(module.lstrip("."))
            module = module.lstrip(".")
        bindings = {}
        for child in node.children_by_field_name("name"):
            if child.type == "aliased_import":
                bindings[_text(child.child_by_field_name("alias"))] = _text(child.child_by_field_name("name"))
            else:
                bindings[_text(child).split(".")[-1]] = _text(child)
        if any(child.type == "wildcard_import" for child in node.children):
            bindings["*"] = "*"
        return [Import(module, bindings, level, line)]
    if node.type in ("if_statement", "try_statement"):  # guarded imports
        return [imp for child in node.named_children for sub in _block_children(child)
                for imp in _python_imports(sub)]
    return []


def _block_children(node: ts.Node) -> list[ts.Node]:
    if node.type in ("block",):
        return node.named_children
    return [grand for child in node.named_children if child.type == "block"
            for grand in child.named_children]


def _js_imports(node: ts.Node) -> list[Import]:
    if node.type != "import_statement":
        return []
    source = _text(node.child_by_field_name("source")).strip("'\"`")
    bindings: dict[str, str] = {}
    for clause in node.named_children:
        if clause.type != "import_clause":
            continue
        for child in clause.named_children:
            if child.type == "identifier":
                bindings[_text(child)] = "default"
            elif child.type == "namespace_import":
                for ident in child.named_children:
                    bindings[_text(ident)] = ""
            elif child.type == "named_imports":
                for spec in child.named_children:
                    if spec.type != "import_specifier":
                        continue
                    name = _text(spec.child_by_field_name("name"))
                    alias = spec.child_by_field_name("alias")
                    bindings[_text(alias) if alias is not None else name] = name
    return [Import(source, bindings, 0, node.start_point[0])]


def _generic_imports(kinds: tuple[str, ...]):
    """Imports for languages where the module path's last identifier is what gets bound."""

    def extract(node: ts.Node) -> list[Import]:
        if node.type not in kinds:
            return []
        result = []
        specs = [n for n in _walk(node) if n.type in ("import_spec",)] or [node]
        for spec in specs:
            path = spec.child_by_field_name("path") if spec.type == "import_spec" else None
            text = _text(path) if path is not None else _text(spec)
            for keyword in ("#include", "import", "use", "static", "pub", ";"):
                text = text.replace(keyword, " ")
            module = text.strip().strip("<>\"").strip()
            idents = IDENT_RE.findall(module)
            bindings = {idents[-1]: ""} if idents else {}
            result.append(Import(module, bindings, 0, spec.start_point[0]))
        return result

    return extract


def _walk(node: ts.Node):
    yield node
    for child in node.named_children:
        yield from _walk(child)


_IMPORT_EXTRACTORS = {
    "python": _python_imports,
    "javascript": _js_imports,
    "typescript": _js_imports,
    "tsx": _js_imports,
    "go": _generic_imports(("import_declaration",)),
    "rust": _generic_imports(("use_declaration",)),
    "java": _generic_imports(("import_declaration",)),
    "c": _generic_imports(("preproc_include",)),
    "cpp": _generic_imports(("preproc_include",)),
}
