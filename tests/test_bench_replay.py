"""The replay bench: traces from a git repository, prompts that keep their prefix while typing, and
the per-request measures on a tiny model."""

from __future__ import annotations

import json
import subprocess

import pytest

from inference import GenerationConfig, load_model
from inference.bench.make_trace import make_trace
from inference.bench.replay import make_engine, replay, requests_from_trace, summarize
from qwen_lsp.cli import main

SOURCES = {
    "shapes.py": "import math\n\n\ndef area(width, height):\n    product = width * height\n    rounded = round(product)\n"
                 "    return rounded\n\n\ndef circle(radius):\n    squared = radius * radius\n"
                 "    scaled = math.pi * squared\n    return scaled\n",
    "points.py": "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n"
                 "    def shifted(self, dx, dy):\n        x = self.x + dx\n        y = self.y + dy\n"
                 "        return Point(x, y)\n",
    "util.py": "def add(a, b):\n    return a + b\n",
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A small git repository of Python files."""
    root = tmp_path_factory.mktemp("repo")
    for name, text in SOURCES.items():
        (root / name).write_text(text * 3)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    return root


def test_trace_replays_to_stable_prompts(tiny_model_dir, repo):
    lm = load_model(tiny_model_dir("qwen2"))
    trace = make_trace(repo, files=2, context_files=1, typed_chars=12)
    kinds = {e["kind"] for e in trace["events"]}
    assert kinds == {"fresh", "edit"} and set(trace["context"]) <= set(trace["files"])
    requests = requests_from_trace(trace, lm.tokenizer, prefix_lines=12, context_chars=500)
    assert sum(r.first_of_file for r in requests) == 2
    consecutive = [(a, b) for a, b in zip(requests, requests[1:]) if not b.first_of_file and a.kind == b.kind]
    shared = [next(i for i, (x, y) in enumerate(zip(a.prompt_ids, b.prompt_ids)) if x != y) for a, b in consecutive]
    assert shared and sum(shared) > 0.5 * sum(len(b.prompt_ids) for _, b in consecutive)


def test_replay_reports_cache_and_speculation_measures(tiny_model_dir, repo):
    lm = load_model(tiny_model_dir("qwen2"))
    requests = requests_from_trace(make_trace(repo, files=1, typed_chars=8), lm.tokenizer,
                                   prefix_lines=6, suffix_lines=2, context_chars=0, limit=5)
    config = GenerationConfig(max_new_tokens=6, stop_ids=frozenset())
    measured = replay({mode: make_engine(lm, mode) for mode in ("plain", "cache", "ngram")}, requests, config)
    plain, cached, ngram = measured["plain"], measured["cache"], measured["ngram"]
    assert all(m.cached_tokens == 0 for m in plain)
    assert all(m.cached_tokens > 0 for m in cached[1:])
    summary = summarize(ngram, plain, cached)
    assert summary["identical"] and 0 < summary["served_from_cache"] <= 1
    assert [m.token_ids for m in cached] == [m.token_ids for m in plain]


def test_bench_replay_command(tiny_model_dir, repo, tmp_path, capsys):
    out = tmp_path / "replay.json"
    model = str(tiny_model_dir("qwen2"))
    assert main(["bench", "--replay-repo", str(repo), "--files", "1", "--models", model,
                 "--modes", "plain,cache,ngram,draft", "--draft",
                 str(tiny_model_dir("qwen3")), "--limit", "3", "--new-tokens", "4",
                 "--context-chars", "0", "--prefix-lines", "6", "--json-out", str(out)]) == 0
    summaries = json.loads(out.read_text())["models"][model]["summaries"]
    assert set(summaries) == {"plain", "cache", "ngram", "draft"} and summaries["draft"]["identical"]
    assert "latency_ms_p50" in capsys.readouterr().out
