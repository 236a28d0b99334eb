"""Languages and per-file symbol extraction."""

import pytest

from qwen_lsp.context.languages import LANGUAGES, get_language, get_tags_query, language_for_path
from qwen_lsp.context.symbols import extract_symbols

PY = '''import os
from .models import User as U, Group
from . import helpers

class Store:
    """Keeps users."""

    def add(self, user: U) -> None:
        """Add one."""
        self.users.append(user)

def load(path):
    return Store()
'''

SAMPLES = {
    "a.js": "import x, {y as z} from './lib';\nexport function f(a) { return a }\nclass K { m() {} }\n",
    "a.ts": "import * as ns from './ns';\ninterface I { m(): void }\nfunction g(x: number): number { return x }\n",
    "a.tsx": "export function App() { return <div/> }\n",
    "a.go": "package main\nimport \"fmt\"\n// Add adds.\nfunc Add(a int) int { return a }\ntype T struct{}\n",
    "a.rs": "use std::io;\n/// Doc.\nfn add(a: i32) -> i32 { a }\nstruct S;\nimpl S { fn m(&self) {} }\n",
    "A.java": "import java.util.List;\nclass A { void m() {} }\n",
    "a.c": "#include \"a.h\"\nint add(int a) { return a; }\n",
    "a.cpp": "#include <vector>\nclass C { public: int m(); };\nint f() { return 1; }\n",
}


def test_every_language_has_grammar_and_tags():
    for spec in LANGUAGES:
        assert get_language(spec.name) is not None, spec.name
        assert get_tags_query(spec.name) is not None, spec.name


def test_language_for_path():
    assert language_for_path("x/y.PY") == "python"
    assert language_for_path("y.hpp") == "cpp"
    assert language_for_path("README.md") is None
    assert language_for_path("Makefile") is None


def test_python_definitions_docstrings_and_imports():
    symbols = extract_symbols("pkg/store.py", PY, "python")
    by_name = {d.name: d for d in symbols.definitions}
    assert by_name["Store"].kind == "class" and by_name["Store"].doc == '"""Keeps users."""'
    assert by_name["add"].kind == "method" and by_name["add"].parent == "Store"
    assert by_name["add"].signature == "def add(self, user: U) -> None:"
    assert by_name["load"].body.startswith("def load(path):")
    imports = {(i.module, i.level): i.bindings for i in symbols.imports}
    assert imports[("os", 0)] == {"os": ""}
    assert imports[("models", 1)] == {"U": "User", "Group": "Group"}
    assert imports[("", 1)] == {"helpers": "helpers"}
    assert symbols.identifiers["user"] == 2


@pytest.mark.parametrize("path", sorted(SAMPLES))
def test_other_languages_extract_definitions_and_imports(path):
    symbols = extract_symbols(path, SAMPLES[path], language_for_path(path))
    assert symbols.definitions, path
    if path != "a.tsx":
        assert symbols.imports, path


def test_js_import_bindings_and_go_doc_comment():
    js = extract_symbols("a.js", SAMPLES["a.js"], "javascript")
    assert js.imports[0].module == "./lib" and js.imports[0].bindings == {"x": "default", "z": "y"}
    go = extract_symbols("a.go", SAMPLES["a.go"], "go")
    add = next(d for d in go.definitions if d.name == "Add")
    assert add.doc == "// Add adds." and add.signature == "func Add(a int) int"


def test_unknown_language_and_broken_input_are_text_only():
    symbols = extract_symbols("notes.txt", "alpha beta beta", None)
    assert symbols.definitions == [] and symbols.identifiers["beta"] == 2
    broken = extract_symbols("b.py", "def (:\n  \x00\ufffd class", "python")
    assert isinstance(broken.definitions, list)
