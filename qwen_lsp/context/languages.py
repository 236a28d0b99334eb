"""File extension -> tree-sitter language, parsers and tags queries.

Grammars come from the maintained per-language PyPI packages (tree-sitter-python,
tree-sitter-javascript, ...), which bundle their parsers and tags queries and need no
download at run time. A language whose package is missing falls back to text-only context.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import tree_sitter as ts


@dataclass(frozen=True)
class LanguageSpec:
    """One supported language: its grammar package and how to reach its grammar."""

    name: str
    extensions: tuple[str, ...]
    module: str
    factory: str = "language"
    comment: str = "//"
    extra_tags_file: str | None = None  # a tags.scm in the package's queries/ dir


LANGUAGES: tuple[LanguageSpec, ...] = (
    LanguageSpec("python", (".py", ".pyi"), "tree_sitter_python", comment="#"),
    LanguageSpec("javascript", (".js", ".jsx", ".mjs", ".cjs"), "tree_sitter_javascript"),
    LanguageSpec("typescript", (".ts", ".mts", ".cts"), "tree_sitter_typescript",
                 factory="language_typescript", extra_tags_file="tags.scm"),
    LanguageSpec("tsx", (".tsx",), "tree_sitter_typescript",
                 factory="language_tsx", extra_tags_file="tags.scm"),
    LanguageSpec("go", (".go",), "tree_sitter_go"),
    LanguageSpec("rust", (".rs",), "tree_sitter_rust"),
    LanguageSpec("java", (".java",), "tree_sitter_java"),
    LanguageSpec("c", (".c", ".h"), "tree_sitter_c"),
    LanguageSpec("cpp", (".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx", ".ipp"), "tree_sitter_cpp"),
)

_BY_NAME = {spec.name: spec for spec in LANGUAGES}
_BY_EXT = {ext: spec for spec in LANGUAGES for ext in spec.extensions}
_lock = threading.Lock()


def language_for_path(path: str | os.PathLike) -> str | None:
    """The language name for a file path, or None when we have no grammar for it."""
    return _spec_for_path(path).name if _spec_for_path(path) else None


def _spec_for_path(path: str | os.PathLike) -> LanguageSpec | None:
    return _BY_EXT.get(os.path.splitext(str(path))[1].lower())


def comment_prefix(path: str | os.PathLike) -> str:
    """The line-comment marker for a file (``#`` for unknown languages)."""
    spec = _spec_for_path(path)
    return spec.comment if spec else "#"


@lru_cache(maxsize=None)
def get_language(name: str) -> ts.Language | None:
    """The tree-sitter Language for a name, or None when its grammar package is missing."""
    spec = _BY_NAME.get(name)
    if spec is None:
        return None
    try:
        module = importlib.import_module(spec.module)
        return ts.Language(getattr(module, spec.factory)())
    except (ImportError, AttributeError, ValueError):
        return None


def get_parser(name: str) -> ts.Parser | None:
    """A fresh parser for the language (parsers are not shared between threads)."""
    language = get_language(name)
    return ts.Parser(language) if language is not None else None


@lru_cache(maxsize=None)
def get_tags_query(name: str) -> ts.Query | None:
    """The bundled tags query (definitions and references) for a language, if any."""
    language = get_language(name)
    if language is None:
        return None
    spec = _BY_NAME[name]
    module = importlib.import_module(spec.module)
    sources = []
    if spec.extra_tags_file:  # TypeScript's tags build on JavaScript's
        js = importlib.import_module("tree_sitter_javascript")
        sources.append(js.TAGS_QUERY)
        path = Path(module.__file__).parent / "queries" / spec.extra_tags_file
        if path.is_file():
            sources.append(path.read_text(encoding="utf-8"))
    else:
        sources.append(getattr(module, "TAGS_QUERY", ""))
    with _lock:
        for text in (("\n".join(sources)), sources[-1]):
            try:
                return ts.Query(language, text) if text.strip() else None
            except (ts.QueryError, ValueError):
                continue
    return None
