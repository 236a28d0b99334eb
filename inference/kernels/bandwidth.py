"""Measured memory read bandwidth: the physical limit of bandwidth-bound decode (the bench reports
against it; kernel selection charges each one-token call at least its bytes over it)."""

from __future__ import annotations

import time

import torch


def read_bandwidth_gbs(threads: int, megabytes: int = 512, repeats: int = 7) -> float:
    """GB/s of a large fp32 sum on `threads` threads (median of `repeats`, buffer far beyond cache)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        buffer = torch.ones(megabytes * 2**20 // 4)
        buffer.sum()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            buffer.sum()
            times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return buffer.numel() * 4 / sorted(times)[repeats // 2] / 1e9
