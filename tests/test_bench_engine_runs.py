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
