"""CompletionPipeline with a scripted model, the complete/eval subcommands on the tiny random
model, and the real-model tier (QWEN_LSP_TEST_GGUF)."""

import json
import os
from pathlib import Path

import pytest
from context_fakes import FakeModel, ensure_generation_config

from qwen_lsp.cli import main as cli_main
from qwen_lsp.context.workspace_index import WorkspaceIndex
from qwen_lsp.pipeline import CompletionPipeline, PipelineConfig
from qwen_lsp.prompt import Budgets

UTIL = 'def slugify(title: str, sep: str = "-") -> str:\n    """Lower-case words joined by sep."""\n    return sep.join(title.lower().split())\n'
MAIN = "from blog.util import slugify\n\n\ndef post_url(post):\n    slug = slugify()\n"


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "blog"
    (root / "blog").mkdir(parents=True)
    (root / "blog/__init__.py").write_text("")
    (root / "blog/util.py").write_text(UTIL)
    (root / "blog/main.py").write_text(MAIN)
    return root


def test_pipeline_stages_and_timings(workspace, monkeypatch):
    ensure_generation_config(monkeypatch)
    index = WorkspaceIndex(workspace)
    index.index_all()
    model = FakeModel("post.title)\n    return slug<|endoftext|>")
    pipeline = CompletionPipeline(model, index, PipelineConfig(budgets=Budgets()))
    suggestion = pipeline.complete(str(workspace / "blog/main.py"), MAIN, 4, len("    slug = slugify("))
    assert suggestion.text == "post.title"  # one line; the ")" is already there
    assert not suggestion.multiline
    assert set(suggestion.timings) == {"window_ms", "context_ms", "prompt_ms", "model_ms", "post_ms", "total_ms"}
    assert "<|file_sep|>blog/util.py\ndef slugify" in suggestion.prompt.text
    assert suggestion.prompt.text.startswith("<|repo_name|>blog\n")
    # a keystroke on the same line reuses the retrieved context
    again = pipeline.complete(str(workspace / "blog/main.py"), MAIN.replace("slugify()", "slugify(p)"),
                              4, len("    slug = slugify(p"))
    assert again.prompt.ids[:suggestion.prompt.context_end] == \
        suggestion.prompt.ids[:suggestion.prompt.context_end]


def test_pipeline_survives_bad_positions_and_unknown_languages(workspace, monkeypatch):
    ensure_generation_config(monkeypatch)
    index = WorkspaceIndex(workspace)
    index.index_all()
    pipeline = CompletionPipeline(FakeModel("x"), index)
    assert pipeline.complete(str(workspace / "notes.weird"), "abc\ndef", 99, 99).text == "x"
    assert pipeline.complete(str(workspace / "blog/main.py"), "", -3, -1).text == "x"


def test_complete_command_through_the_cli(workspace, tiny_model_dir, capsys):
    model = str(tiny_model_dir())
    argv = ["complete", f"{workspace}/blog/main.py:5:20", "--workspace", str(workspace),
            "--json", "--show-prompt", "--model", model, "--max-new-tokens", "4"]
    assert cli_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out["suggestion"], str) and "<|fim_middle|>" in out["prompt"]
    assert any(s["path"].endswith("util.py") for s in out["snippets"])
    assert cli_main(["complete", "nope.py:x:1", "--model", model]) == 2


def test_eval_command_through_the_cli(workspace, tiny_model_dir, capsys, tmp_path):
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps({"id": "a", "kind": "call_args", "workspace": str(workspace),
                                 "file": "blog/main.py", "line": 4, "col": 19,
                                 "middle": ""}) + "\n")
    rows = tmp_path / "rows.jsonl"
    model = str(tiny_model_dir())
    assert cli_main(["eval", str(cases), "--strategy", "none,repo", "--json", "--model", model,
                     "--max-new-tokens", "4", "--rows", str(rows)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"none", "repo"} and summary["repo"]["all"]["n"] == 1
    assert [json.loads(line)["config"] for line in rows.read_text().splitlines()] == ["none", "repo"]
    assert cli_main(["eval", str(cases), "--strategy", "bogus", "--model", model]) == 2


@pytest.mark.real_model
def test_real_model_completes_with_repo_context(workspace):
    gguf = os.environ.get("QWEN_LSP_TEST_GGUF")
    if not gguf:
        pytest.skip("QWEN_LSP_TEST_GGUF is not set")
    from inference import load_model

    index = WorkspaceIndex(workspace)
    index.index_all()
    pipeline = CompletionPipeline(load_model(gguf), index,
                                  PipelineConfig(max_new_tokens=24))
    text = Path(workspace / "blog/main.py").read_text()
    suggestion = pipeline.complete(str(workspace / "blog/main.py"), text, 4, len("    slug = slugify("))
    assert "<|" not in suggestion.text and "\n" not in suggestion.text
    assert suggestion.text.strip()
    assert suggestion.timings["context_ms"] < 1000


def test_anchored_window_keeps_the_prompt_start_while_the_cursor_moves_within_it(workspace, tiny_model_dir):
    from inference import load_model

    index = WorkspaceIndex(workspace)
    index.index_all()
    body = "".join(f"    total_{i} = slugify('post {i}')\n" for i in range(300))
    text = MAIN + "\n\ndef many(post):\n" + body + "    return total_0\n"
    path = str(workspace / "blog/main.py")
    lines = text.split("\n")
    pipeline = CompletionPipeline(load_model(tiny_model_dir("qwen2")), index,
                                  PipelineConfig(budgets=Budgets(prefix_tokens=2000), anchor_window=True))
    first, window, _ = pipeline.build_prompt(path, text, len(lines) - 3, 4)
    moved, moved_window, _ = pipeline.build_prompt(path, text, len(lines) - 8, 4)
    assert moved_window.start_line == window.start_line
    assert moved.ids[:first.context_end] == first.ids[:first.context_end]  # the same repo context
    shared = next(i for i, (a, b) in enumerate(zip(moved.ids, first.ids)) if a != b)
    above = "\n".join(lines[window.start_line:len(lines) - 8])
    assert shared >= first.context_end + len(pipeline.lm.tokenizer.encode(above)) - 1  # and window up to the cursor
    fresh, fresh_window, _ = CompletionPipeline(pipeline.lm, index, PipelineConfig(budgets=Budgets(prefix_tokens=2000))) \
        .build_prompt(path, text, len(lines) - 8, 4)
    assert fresh_window.start_line != window.start_line  # without the anchor the start would have moved
