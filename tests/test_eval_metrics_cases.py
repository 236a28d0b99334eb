"""Eval: metrics, case generation from a project, masking, and the runner end to end."""

import json
import subprocess
from pathlib import Path

import pytest
from context_fakes import FakeModel, ensure_generation_config

from qwen_lsp.eval.cases import Case, load_cases, masked_document, resolve_workspace
from qwen_lsp.eval.make_cases import candidates
from qwen_lsp.eval.make_cases import main as make_cases_main
from qwen_lsp.eval.metrics import edit_similarity, levenshtein, score, summarize
from qwen_lsp.eval.runner import run_cases
from qwen_lsp.pipeline import PipelineConfig


def test_metrics():
    assert levenshtein("kitten", "sitting") == 3
    assert edit_similarity("abc", "abc") == 100.0
    assert edit_similarity("", "") == 100.0
    assert edit_similarity("abcd", "abce") == 75.0
    assert score(" foo(x)\n", "foo(x)") == {"em": 100.0, "es": 100.0, "first_line_em": 100.0}
    assert score("a\nb", "a\nc")["first_line_em"] == 100.0
    rows = [{"kind": "line", "em": 100.0, "es": 100.0, "first_line_em": 100.0, "prompt_tokens": 10,
             "timings": {"context_ms": 2.0, "total_ms": 5.0}},
            {"kind": "block", "em": 0.0, "es": 50.0, "first_line_em": 0.0, "prompt_tokens": 20,
             "timings": {"context_ms": 4.0, "total_ms": 9.0}}]
    summary = summarize(rows)
    assert summary["all"]["n"] == 2 and summary["all"]["es"] == 75.0
    assert summary["line"]["context_ms_p50"] == 2.0
    rows[0]["project"] = "shop"
    assert summarize(rows)["project:shop"]["n"] == 1 and list(summarize(rows))[-1] == "project:shop"


def project(tmp_path):
    root = tmp_path / "shop"
    (root / "shop").mkdir(parents=True)
    (root / "shop/__init__.py").write_text("")
    (root / "shop/prices.py").write_text(
        "def net_price(gross: float, rate: float) -> float:\n    return gross / (1 + rate)\n")
    (root / "shop/cart.py").write_text(
        "from shop.prices import net_price\n\n\n"
        "def total(items, rate):\n"
        "    values = [net_price(item.price, rate) for item in items]\n"
        "    return sum(values)\n\n\n"
        "def first_net(items, rate):\n"
        "    net = net_price(items[0].price, rate)\n"
        "    return round(net, 2)\n")
    return root


def test_make_cases_and_masking(tmp_path):
    root = project(tmp_path)
    out = tmp_path / "cases.jsonl"
    assert make_cases_main(["--repo", str(root), "--out", str(out), "--per-kind", "5"]) == 0
    cases = load_cases(out)
    kinds = {case.kind for case in cases}
    assert kinds == {"line", "call_args", "block"}
    for case in cases:
        original = (resolve_workspace(case.workspace) / case.file).read_text()
        document = masked_document(case, original)
        assert len(document) == len(original) - len(case.middle)
        assert "net_price" in case.middle or case.kind == "call_args"
    args = next(c for c in cases if c.kind == "call_args")
    assert args.middle in ("item.price, rate", "items[0].price, rate")
    stale = Case("x", "line", str(root), "shop/cart.py", 0, 0, "not there")
    with pytest.raises(ValueError):
        masked_document(stale, (root / "shop/cart.py").read_text())
    assert json.loads(cases[0].to_json())["file"] == "shop/cart.py"


def test_docstrings_are_not_line_cases():
    text = ("from shop.prices import net_price\n\n\ndef f(x):\n"
            "    \"\"\"Calls net_price.\"\"\"\n    return net_price(x, 0.2)\n")
    lines = [middle for _, _, middle in candidates(text, {"net_price"})["line"]]
    assert lines == ["return net_price(x, 0.2)"]


def test_git_workspaces_are_commits_of_this_repository(tmp_path, monkeypatch):
    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    monkeypatch.setenv("HOME", str(tmp_path))
    root = resolve_workspace("git:" + head.stdout.strip())
    assert root.name == "qwen-lsp" and (root / "qwen_lsp/eval/cases.py").is_file()
    assert resolve_workspace("git:" + head.stdout.strip()) == root  # extracted once


def test_runner_scores_the_full_pipeline_and_hides_the_answer(tmp_path, monkeypatch):
    ensure_generation_config(monkeypatch)
    root = project(tmp_path)
    case = Case("c1", "call_args", str(root), "shop/cart.py", 9, len("    net = net_price("),
                "items[0].price, rate")
    seen = []

    def reply(prompt: str) -> str:
        seen.append(prompt)
        return "items[0].price, rate))\n"

    model = FakeModel(reply)
    configs = {s: PipelineConfig(strategy=s) for s in ("repo", "none", "random-chunks")}
    rows = run_cases(model, [case], configs)
    assert [row["config"] for row in rows] == ["repo", "none", "random-chunks"]
    for row in rows:
        assert row["prediction"] == "items[0].price, rate"  # closer balanced away
        assert row["em"] == 100.0
        assert row["timings"]["context_ms"] >= 0
    repo_prompt, none_prompt = seen[0], seen[1]
    assert "def net_price(gross: float, rate: float)" in repo_prompt
    assert "def net_price" not in none_prompt
    assert "net_price(items[0].price, rate)" not in repo_prompt  # the answer stays masked
