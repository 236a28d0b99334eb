"""Context retrieval: resolution of names at the cursor, ranking, budget and dedup."""

from qwen_lsp.context.recent import RecentRegions
from qwen_lsp.context.retrieval import ContextRetriever, sibling_paths
from qwen_lsp.context.workspace_index import WorkspaceIndex

MODELS = '''class Account:
    """A bank account with a balance."""

    def __init__(self, owner: str, balance: int = 0):
        self.owner = owner
        self.balance = balance

    def deposit(self, amount: int) -> int:
        """Add money and return the new balance."""
        self.balance += amount
        return self.balance

    def withdraw(self, amount: int) -> int:
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.balance -= amount
        return self.balance
''' + "\n".join(f"    def extra_{i}(self):\n        return {i}\n" for i in range(10))

FEES = '''def monthly_fee(balance: int) -> int:
    """The fee charged on a balance."""
    return 0 if balance > 1000 else 5
'''

SERVICE = '''from bank.models import Account
from bank import fees


def open_account(owner):
    account = Account(owner)
    fee = fees.monthly_fee(account.balance)
    account.'''


def count(text: str) -> int:
    return len(text.split()) + text.count("\n")


def make(tmp_path):
    root = tmp_path / "bankrepo"
    (root / "bank").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "bank/__init__.py").write_text("")
    (root / "bank/models.py").write_text(MODELS)
    (root / "bank/fees.py").write_text(FEES)
    (root / "bank/service.py").write_text(SERVICE)
    (root / "tests/test_service.py").write_text("def test_open_account():\n    assert open_account('a')\n")
    (root / "bank/unrelated.py").write_text("def render_html(page):\n    return page.body\n" * 3)
    index = WorkspaceIndex(root)
    index.index_all()
    return index


def retrieve_at_end(index, text, first_window_line=30, **kwargs):
    """Context for a cursor at the end of `text` as bank/service.py, the window from `first_window_line`
    (negative: from the end) to the end."""
    lines = text.split("\n")
    window = (first_window_line % len(lines), len(lines))
    return ContextRetriever(index, count).retrieve("bank/service.py", text, len(lines) - 1, len(lines[-1]), window,
                                                   400, **kwargs)


def retrieve(index, budget=400, recent=None, window=(0, 8)):
    retriever = ContextRetriever(index, count, recent)
    lines = SERVICE.split("\n")
    return retriever.retrieve("bank/service.py", SERVICE, len(lines) - 1, len(lines[-1]),
                              window, budget)


def test_imported_names_resolve_to_their_definitions(tmp_path):
    result = retrieve(make(tmp_path))
    by_path = {(s.path, s.source): s for s in result.snippets}
    account = by_path[("bank/models.py", "import")]
    assert account.text.startswith("class Account:")
    assert '"""A bank account with a balance."""' in account.text
    # members as header and docstring line (or first body line): real code, no "..." stubs
    assert 'def deposit(self, amount: int) -> int:\n        """Add money and return the new balance."""' in account.text
    assert "    def withdraw(self, amount: int) -> int:\n        if amount > self.balance:\n            raise ValueError(\"insufficient funds\")\n    def extra_0" in account.text
    assert "..." not in account.text
    assert "        self.owner = owner" in account.text  # __init__ keeps what it sets
    assert "self.balance -= amount" not in account.text  # long bodies are not inlined
    fee = by_path[("bank/fees.py", "import")]
    assert fee.text == FEES.rstrip("\n")  # short definitions come whole
    assert result.snippets[0].source == "import"


def test_outlines_skip_docstring_words_and_show_a_long_function_head(tmp_path):
    index = make(tmp_path)
    server = ('class Server:\n    """Base server.\n\n    Parameters\n    protocol_cls\n    """\n'
              '    protocol: int\n\n' + "".join(f"    def m{i}(self):\n        x = {i}\n        y = x\n        return y\n\n" for i in range(3)))
    long_fn = ('def serve(port):\n    """Serve forever."""\n    sock = open_socket(\n        port)\n'
               + "".join(f"    step_{i}()\n" for i in range(20)))
    (index.root / "bank/server.py").write_text(server + "\n\n" + long_fn)
    index.index_all()
    retriever = ContextRetriever(index, count)
    definitions = {d.name: d for d in index.symbols("bank/server.py").definitions}
    outline = retriever._render("bank/server.py", definitions["Server"], "import", 1.0).text
    assert "Parameters" not in outline.replace('"""Base server."""', "")
    assert "protocol_cls" not in outline and "    protocol: int" in outline
    assert "    def m1(self):\n        x = 1" in outline
    head = retriever._render("bank/server.py", definitions["serve"], "import", 1.0).text
    assert head.split("\n") == ["def serve(port):", '    """Serve forever."""', "    sock = open_socket(",
                                 "        port)", "    step_0()", "    step_1()", "    step_2()", "    step_3()"]


def test_a_definition_too_long_for_its_room_is_cut_not_dropped(tmp_path):
    result = retrieve(make(tmp_path), budget=110)
    account = next(s for s in result.snippets if s.path == "bank/models.py")
    assert account.text.startswith("class Account:\n")
    assert "extra_9" not in account.text  # the tail did not fit
    assert account.tokens <= 110 // 2


def test_far_imports_are_candidates_too(tmp_path):
    index = make(tmp_path)
    text = SERVICE.replace("    account = Account(owner)\n", "\n" * 40 + "    account = None\n")
    retriever = ContextRetriever(index, count)
    lines = text.split("\n")
    result = retriever.retrieve("bank/service.py", text, len(lines) - 1, len(lines[-1]),
                                (30, len(lines)), 400)
    assert any(s.path == "bank/models.py" for s in result.snippets)  # Account: 40 lines up


def test_budget_is_respected_and_counted(tmp_path):
    index = make(tmp_path)
    for budget in (30, 120, 400):
        result = retrieve(index, budget)
        assert sum(s.tokens for s in result.snippets) <= budget
    assert not retrieve(index, 0).snippets


def test_sibling_recent_and_similar_sources(tmp_path):
    index = make(tmp_path)
    recent = RecentRegions()
    recent.touch("bank/unrelated.py", 1, edited=True)
    recent.touch("bank/service.py", 3, edited=True)  # the current file never comes back
    sources = {(s.source, s.path) for s in retrieve(index, 2000, recent).snippets}
    assert ("sibling", "tests/test_service.py") in sources
    assert ("recent", "bank/unrelated.py") in sources
    assert not any(path == "bank/service.py" for _, path in sources)


def test_similar_chunks_do_not_start_inside_a_statement(tmp_path):
    index = make(tmp_path)
    call = "    rates = lookup(\n" + "        fees.monthly_fee(account.balance),\n" * 12 + "    )\n"
    (index.root / "bank/rates.py").write_text("def rates():\n" + call + "    return rates\n")
    index.index_all()
    similar = [s for s in retrieve(index, 2000).snippets if s.path == "bank/rates.py"]
    assert similar and all(not s.text.startswith("        fees.") for s in similar)


def test_snippets_in_the_window_are_not_repeated(tmp_path):
    index = make(tmp_path)
    retriever = ContextRetriever(index, count)
    text = FEES + "\n" + SERVICE.replace("from bank import fees\n", "from bank.fees import monthly_fee\n")
    lines = text.split("\n")
    result = retriever.retrieve("bank/service.py", text, len(lines) - 1, 0, (0, len(lines)), 2000)
    assert not any(s.path == "bank/fees.py" and s.source == "import" for s in result.snippets)


def test_head_carries_imports_and_enclosing_headers_beyond_the_window(tmp_path):
    index = make(tmp_path)
    lines = SERVICE.split("\n")
    result = retrieve(index, 400, window=(5, 8))
    head = "\n".join(s.text for s in result.head)
    assert "from bank.models import Account" in head
    assert "def open_account(owner):" in head
    assert len(lines) == 8


def test_head_puts_imports_of_names_used_near_the_cursor_first(tmp_path):
    index = make(tmp_path)
    text = ("from bank.models import Account\nfrom bank.fees import monthly_fee\n\n"
            + "\n" * 40 + "def charge(owner):\n    fee = monthly_fee(owner)\n    return ")
    result = retrieve_at_end(index, text, head_budget_tokens=12)
    assert [s.text for s in result.head if s.source == "imports"] == [
        "from bank.fees import monthly_fee"]


def test_an_import_not_used_yet_weighs_as_little_as_a_far_one(tmp_path):
    index = make(tmp_path)
    far = "x = monthly_fee(1)\n" + "\n" * 40
    text = "from bank.models import Account\nfrom bank.fees import monthly_fee\n\n" + far + "def charge(client):\n    return "
    result = retrieve_at_end(index, text)
    scores = {s.path: s.score for s in result.snippets if s.source == "import"}
    assert scores["bank/models.py"] == scores["bank/fees.py"]  # the eval's masking leaves such imports


def test_positions_past_the_end_are_clamped(tmp_path):
    retriever = ContextRetriever(make(tmp_path), count)
    result = retriever.retrieve("bank/service.py", SERVICE, 999, 999, (0, 8), 100)
    assert result.tokens <= 100 + 100


def test_sibling_paths():
    assert "pkg/tests/test_mod.py" in sibling_paths("pkg/mod.py")
    assert "pkg/mod.py" in sibling_paths("pkg/test_mod.py")
    assert "src/util.ts" in sibling_paths("src/util.test.ts")
    assert "src/main/Foo.java" in sibling_paths("src/main/FooTest.java")


def test_recent_regions_merge_and_order():
    recent = RecentRegions(max_regions=3, radius=8)
    recent.touch("a.py", 10, edited=False)
    recent.touch("a.py", 12, edited=True)  # same bucket: merged, now an edit
    recent.touch("b.py", 100, edited=False)
    regions = recent.regions()
    assert [r.path for r in regions] == ["b.py", "a.py"]
    assert regions[1].edited and regions[1].start_line <= 10 < regions[1].end_line
    for i in range(5):
        recent.touch("c.py", i * 100, edited=False)
    assert len(recent.regions()) == 3
    assert all(r.path != "c.py" for r in recent.regions(exclude_path="c.py"))
    recent.forget_file("c.py")
    assert recent.regions() == []


def test_tab_indented_outlines_and_chunks_cut_inside_a_docstring(tmp_path):
    root = tmp_path / "tabs"
    root.mkdir()
    members = "".join(f'\tdef m{i}(self):\n\t\t"""Step {i}."""\n\t\treturn {i}\n\n' for i in range(4))
    (root / "spec.py").write_text('class Spec:\n\t"""A spec."""\n\n' + members)
    doc = "".join(f"\t*line {i}* of the doc\n" for i in range(12))
    (root / "util.py").write_text(f'def norm(path):\n\t"""\n{doc}\t"""\n\treturn path.strip()\n')
    index = WorkspaceIndex(root)
    index.index_all()
    retriever = ContextRetriever(index, count)
    outline = retriever._render("spec.py", index.symbols("spec.py").definitions[0], "import", 1.0).text
    assert outline.startswith('class Spec:\n\t"""A spec."""\n\tdef m0(self):\n\t\t"""Step 0."""\n')
    similar = retriever._similar("other.py", ["x = norm(path)", "doc line"], 0, 14, (0, 2), 1.0)
    assert similar and all(not s.text.lstrip().startswith(("*line", '"""')) for s in similar)
    assert any(s.text == "\treturn path.strip()\n" or s.text.startswith("\treturn path.strip()") for s in similar)


def test_module_constants_rank_below_functions_used_as_much(tmp_path):
    root = tmp_path / "consts"
    root.mkdir()
    (root / "lib.py").write_text("LIMIT = 10\n\n\ndef clamp(x):\n    return min(x, LIMIT)\n")
    index = WorkspaceIndex(root)
    index.index_all()
    text = "from lib import LIMIT, clamp\n\ny = clamp(3) + LIMIT\nz = "
    result = ContextRetriever(index, count).retrieve("main.py", text, 3, 4, (0, 4), 400)
    scores = {s.text.split()[0]: s.score for s in result.snippets}
    assert scores["def"] > scores["LIMIT"]


def test_the_next_definition_below_the_cursor_is_not_what_it_uses(tmp_path):
    index = make(tmp_path)
    text = ("def first(x):\n    \n\n\ndef helper_below(y):\n    return y\n"
            + "".join(f"def pad{i}():\n    return {i}\n" for i in range(30)))
    result = ContextRetriever(index, count).retrieve("bank/service.py", text, 1, 4, (0, 2), 400)
    assert "helper_below" not in result.query
    assert not any("helper_below" in s.text for s in result.snippets + result.head)


def test_local_definitions_below_the_window_go_with_the_context_not_the_head(tmp_path):
    index = make(tmp_path)
    text = ("def charge(owner):\n    return apply_fee(owner)\n\n"
            + "".join(f"def pad{i}():\n    return {i}\n" for i in range(30))
            + "def apply_fee(owner):\n    return owner\n")
    index.update_file("bank/service.py", text)  # as the editor's didChange does
    result = ContextRetriever(index, count).retrieve("bank/service.py", text, 1, 27, (0, 3), 400)
    assert not any("apply_fee(owner):" in s.text for s in result.head)
    assert any(s.source == "local" and s.text.startswith("def apply_fee") for s in result.snippets)


def test_head_outlines_the_enclosing_class_above_the_window(tmp_path):
    index = make(tmp_path)
    lines = MODELS.split("\n")
    cursor = lines.index("        self.balance -= amount")
    result = ContextRetriever(index, count).retrieve(
        "bank/models.py", MODELS, cursor, 8, (cursor - 2, cursor + 1), 400)
    head = "\n".join(s.text for s in result.head)
    assert head.startswith('class Account:\n    """A bank account with a balance."""')
    assert "        self.owner = owner" in head  # what self has
    assert "    def deposit(self, amount: int) -> int:" in head
    assert "def extra_0" not in head  # members below the window are not listed


def test_head_has_the_function_whose_next_statement_the_cursor_starts(tmp_path):
    index = make(tmp_path)
    text = "def settle(book):\n" + "".join(f"    book.step_{i}()\n" for i in range(40)) + "\n    "
    lines = text.split("\n")
    result = ContextRetriever(index, count).retrieve(
        "bank/service.py", text, len(lines) - 1, 4, (30, len(lines)), 400)
    assert "def settle(book):" in [s.text for s in result.head]


def test_cut_definitions_end_on_a_whole_statement(tmp_path):
    index = make(tmp_path)
    retriever = ContextRetriever(index, count)
    from qwen_lsp.context.retrieval import Snippet
    text = "class Big:\n    x = 1\n    def __init__(\n        self,\n        a,\n        b,\n    ):\n        self.a = a"
    cut = retriever._cut(Snippet("a.py", 0, 8, text, "import", 1.0), count("\n".join(text.split("\n")[:5])))
    assert cut.text == "class Big:\n    x = 1"


def test_head_imports_under_a_condition_are_dedented(tmp_path):
    index = make(tmp_path)
    text = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bank.models import Account\n"
            + "\n" * 40 + "def charge(owner: Account):\n    return ")
    result = retrieve_at_end(index, text)
    assert "from bank.models import Account" in [s.text for s in result.head]


def test_a_long_constant_shows_its_first_lines_with_brackets_closed(tmp_path):
    root = tmp_path / "names"
    root.mkdir()
    entries = "".join(f'    Kind.K{i}: "k{i}",\n' for i in range(20))
    (root / "names.py").write_text(f"NAMES: dict[Kind, str] = {{\n{entries}}}\n\n\nclass Table:\n"
                                   "    cfg: dict[str, int] = {\n        'a': 1,\n    }\n"
                                   "    def get(self):\n        return self.cfg\n")
    index = WorkspaceIndex(root)
    index.index_all()
    retriever = ContextRetriever(index, count)
    definitions = {d.name: d for d in index.symbols("names.py").definitions}
    text = retriever._render("names.py", definitions["NAMES"], "import", 1.0).text
    assert text.startswith('NAMES: dict[Kind, str] = {\n    Kind.K0: "k0",\n') and text.endswith('",\n}')
    assert "=:" not in text
    outline = retriever._outline("names.py", definitions["Table"], index.text("names.py").split("\n"))
    assert "    cfg: dict[str, int] = {}" in outline


def test_calls_of_builtin_methods_bring_no_call_sites(tmp_path):
    index = make(tmp_path)
    (index.root / "bank/report.py").write_text("def report(a):\n    return '{0}'.format(a.owner)\n")
    index.index_all()
    text = "from bank.models import Account\n\ndef show(a):\n    return '{0}'.format("
    result = ContextRetriever(index, count).retrieve("bank/service.py", text, 3, len("    return '{0}'.format("),
                                                     (0, 4), 400)
    assert not any(s.source == "usage" for s in result.snippets)
    text = text.replace("'{0}'.format(", "monthly_fee(")
    index.update_file("bank/report.py", "def report(a):\n    return monthly_fee(a.balance)\n")
    result = ContextRetriever(index, count).retrieve("bank/service.py", text, 3, len("    return monthly_fee("),
                                                     (0, 4), 400)
    assert any(s.source == "usage" for s in result.snippets)


def test_an_import_named_like_the_name_being_assigned_is_shown(tmp_path):
    index = make(tmp_path)
    uses = "".join(f"    x{i} = Account({i}) if monthly_fee({i}) else None\n" for i in range(40))
    text = ("from bank.models import Account\nfrom bank.fees import monthly_fee\n\n\ndef setup(self):\n"
            + uses + "    self.bank_account = ")
    result = retrieve_at_end(index, text, -3)
    scores = {s.path: s.score for s in result.snippets if s.source == "import"}
    assert scores["bank/models.py"] > scores["bank/fees.py"]  # bank_account: Account


def test_similar_chunks_are_like_the_definition_the_cursor_is_in(tmp_path):
    index = make(tmp_path)
    index.update_file("bank/ledger.py", "def close_ledger(book):\n    book.archive()\n    return book\n")
    index.update_file("bank/printer.py", "def print_report(report):\n    report.render()\n")
    lines = ["def print_report(report):", "    report.render()", "", "", "def close_ledger(book):", "    "]
    similar = ContextRetriever(index, count)._similar("bank/service.py", lines, 5, 4, (0, 6), 1.0)
    assert [s.path for s in similar] == ["bank/ledger.py"]


def test_similar_chunks_come_from_the_current_file_outside_the_window_too(tmp_path):
    index = make(tmp_path)
    text = ("def close_ledger(book):\n    book.archive()\n    return book\n"
            + "".join(f"rate_{i} = {i}\n" for i in range(40)) + "def close_journal(book):\n    ")
    index.update_file("bank/service.py", text)
    lines = text.split("\n")
    similar = ContextRetriever(index, count)._similar(
        "bank/service.py", lines, len(lines) - 1, 4, (len(lines) - 10, len(lines)), 1.0)
    assert [(s.path, s.start_line) for s in similar] == [("bank/service.py", 0)]


def test_similar_chunks_end_on_a_whole_statement(tmp_path):
    index = make(tmp_path)
    body = "".join(f"    book.entry_{i}()\n" for i in range(13)) + "\n    @deprecated(\n        'no'\n    )\n    def reopen(\n        book,"
    index.update_file("bank/ledger.py", "def close_ledger(book):\n" + body + "\n    ):\n        pass\n")
    lines = ["def close_ledger(book):", "    "]
    similar = ContextRetriever(index, count)._similar("bank/service.py", lines, 1, 4, (0, 2), 1.0)
    assert similar[0].text.endswith("    book.entry_12()")


def test_similar_chunks_do_not_end_inside_a_docstring(tmp_path):
    index = make(tmp_path)
    doc = "".join(f"    ledger line {i}\n" for i in range(20))
    index.update_file("bank/ledger.py", f'book.close_ledger()\nbook.archive()\ndef close_ledger(book):\n    """\n{doc}    """\n')
    similar = ContextRetriever(index, count)._similar("bank/service.py", ["book.close_ledger("], 0, 19, (0, 1), 1.0)
    assert similar[0].text == "book.close_ledger()\nbook.archive()"
