"""Call sites: the callee at the cursor and its calls elsewhere in the repo."""

from qwen_lsp.context.retrieval import ContextRetriever
from qwen_lsp.context.usages import call_sites, callee_at
from qwen_lsp.context.workspace_index import WorkspaceIndex


def test_callee_at_finds_the_innermost_open_call():
    assert callee_at("x = open_account(") == "open_account"
    assert callee_at("x = open_account(owner, fees.monthly_fee(") == "monthly_fee"
    assert callee_at("x = open_account(owner, fees.monthly_fee(1), ") == "open_account"
    assert callee_at("x = Account(\n    owner,\n    ") == "Account"
    assert callee_at("x = [") is None
    assert callee_at("f(a)\nx = ") is None
    assert callee_at("y = 1") is None


def make(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "models.py").write_text("def make_account(owner, balance=0):\n    return owner, balance\n")
    (root / "a.py").write_text("from models import make_account\n\nx = make_account('ann', balance=5)\n"
                               "y = make_account('bob', balance=7)\n")
    (root / "b.py").write_text("from models import make_account\n\n\ndef f():\n    return make_account(\n"
                               "        'cy',\n        balance=1,\n    )\n")
    (root / "c.py").write_text("from models import make_account\n\n\ndef g():\n    pass\n\n\nz = 2\n")
    index = WorkspaceIndex(root)
    index.index_all()
    return index


def test_call_sites_are_whole_statements_one_file_first(tmp_path):
    index = make(tmp_path)
    sites = call_sites(index.chunks, index.text, "make_account", "c.py", 2)
    assert [(s.path, s.text) for s in sites] == [
        ("a.py", "x = make_account('ann', balance=5)"),
        ("b.py", "    return make_account(\n        'cy',\n        balance=1,\n    )")]
    assert not any(s.path == "models.py" for s in call_sites(index.chunks, index.text, "make_account", "c.py", 5))
    assert not call_sites(index.chunks, index.text, "make_account", "c.py", 5)[-1].path == "c.py"


def test_retrieval_shows_the_callee_and_its_calls(tmp_path):
    index = make(tmp_path)
    text = "from models import make_account\n\n\ndef g():\n    return make_account("
    retriever = ContextRetriever(index, lambda t: len(t.split()) + t.count("\n"))
    result = retriever.retrieve("c.py", text, 4, len("    return make_account("), (0, 5), 400)
    sources = {(s.source, s.path) for s in result.snippets}
    assert ("import", "models.py") in sources
    assert ("usage", "a.py") in sources and ("usage", "b.py") in sources
