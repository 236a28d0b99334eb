"""The bench's per-engine process reports its own peak memory, not its parent's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_peak_rss_is_the_child_process_own():
    parent_ballast = bytearray(256 * 2**20)
    for i in range(0, len(parent_ballast), 4096):  # touch every page: the parent's RSS is now > 256 MB
        parent_ballast[i] = 1
    code = "from inference.bench.engine_runs import _peak_rss_mb; print(_peak_rss_mb())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert float(done.stdout) < 200  # a bare interpreter; ru_maxrss would say the parent's > 256 MB


def test_bench_random_moe_checkpoints_hold_as_many_experts_as_their_router_rows():
    """The MoE and hybrid speed checks decode random checkpoints: every expert the router can pick exists."""
    from inference.bench.hybrid_decode import HybridRandomCheckpoint, hybrid_config
    from inference.bench.moe_decode import RandomCheckpoint, moe_config

    for checkpoint in (RandomCheckpoint(moe_config()), HybridRandomCheckpoint(hybrid_config())):
        experts = checkpoint.config.num_experts
        assert checkpoint.tensor("blk.0.ffn_gate_inp.weight").shape[0] == experts
        assert len(checkpoint.expert_tensors(0, "down")) == experts


def test_an_engines_row_keeps_its_best_figures_over_alternated_rounds(tmp_path):
    from inference.bench.compare import best_of

    rounds = [
        dict(prefill_tok_s=100.0, decode_tok_s=20.0, ttft_ms=900.0, load_s=2.0, peak_rss_mb=700.0,
             bandwidth_gbs=20.0, decode_bytes_per_token=400e6, token_ids=[1, 2]),
        {"error": "killed"},
        dict(prefill_tok_s=90.0, decode_tok_s=25.0, ttft_ms=1000.0, load_s=1.5, peak_rss_mb=720.0,
             bandwidth_gbs=25.0, decode_bytes_per_token=400e6, token_ids=[1, 2]),
    ]
    row = best_of(tmp_path / "unused.gguf", "qwen-lsp", rounds)
    assert (row["prefill_tok_s"], row["decode_tok_s"], row["ttft_ms"], row["load_s"], row["peak_rss_mb"]) == \
        (100.0, 25.0, 900.0, 1.5, 720.0)
    # 400 MB x 25 tok/s against the 25 GB/s measured around the fastest decode
    assert row["bandwidth_gbs"] == 25.0 and row["bandwidth_use"] == 40.0
    assert row["rounds"] == rounds and "error" not in row
    assert best_of(tmp_path / "unused.gguf", "qwen-lsp", [{"error": "no model"}]) == {"error": "no model"}
