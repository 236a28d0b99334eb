"""`qwen-lsp generate` end to end, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "qwen_lsp.cli", *args], capture_output=True, text=True, timeout=300)


def test_generate_json_reports_text_ids_and_timings(tiny_model_dir):
    out = _run("generate", "--model", str(tiny_model_dir("qwen2")), "--prompt", "<|fim_prefix|>def f(x):\n",
               "--max-new-tokens", "6", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for key in ("text", "token_ids", "prompt_tokens", "ttft_ms", "decode_tokens_per_s", "peak_rss_mb"):
        assert key in report
    assert len(report["token_ids"]) <= 6
    # "<|fim_prefix|>" was parsed as one control token, not spelled out.
    plain = json.loads(_run("generate", "--model", str(tiny_model_dir("qwen2")), "--prompt",
                            "fim_prefix def f(x):\n", "--max-new-tokens", "1", "--json").stdout)
    assert report["prompt_tokens"] < plain["prompt_tokens"] + 3


def test_generate_prints_streamed_text(tiny_model_dir, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("def add(a, b):\n    return", encoding="utf-8")
    out = _run("generate", "--model", str(tiny_model_dir("qwen2")), "--prompt-file", str(prompt),
               "--max-new-tokens", "4")
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("\n")


def test_generate_on_a_bad_model_says_why(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"nope" * 100)
    out = _run("generate", "--model", str(bad), "--prompt", "x")
    assert out.returncode == 2
    assert "broken.gguf" in out.stderr and "bad magic" in out.stderr
    assert "Traceback" not in out.stderr
