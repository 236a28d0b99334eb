"""Measure `inference.quants.dequantize` throughput in GB/s of fp32 output.

Usage: python scripts/bench_dequant.py [--rows 4864] [--cols 896] [--threads 2] [--repeat 5]
Blocks are random bytes with sane fp16 scale fields; the best of `--repeat` runs is reported.
"""

from __future__ import annotations

import argparse
import time

import torch
from gguf import GGMLQuantizationType as QT

from inference.quants import dequantize, row_bytes

SCALE_OFFSETS = {QT.Q8_0: (0,), QT.Q5_0: (0,), QT.Q4_K: (0, 2), QT.Q6_K: (208,), QT.Q5_K: (0, 2)}
BLOCK_BYTES = {QT.Q8_0: 34, QT.Q5_0: 22, QT.Q4_K: 144, QT.Q6_K: 210, QT.Q5_K: 176}


def random_matrix(qtype: QT, rows: int, cols: int) -> torch.Tensor:
    """Random `qtype` blocks for a rows x cols matrix, with every fp16 scale set to a small finite value."""
    raw = torch.randint(0, 256, (rows, row_bytes(qtype, cols)), dtype=torch.uint8)
    blocks = raw.view(rows, -1, BLOCK_BYTES[qtype])
    for offset in SCALE_OFFSETS[qtype]:
        scales = (torch.rand(rows, blocks.shape[1]) * 0.01).to(torch.float16)
        blocks[..., offset:offset + 2] = scales.unsqueeze(-1).view(torch.uint8)
    return raw


def best_seconds(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=896)
    parser.add_argument("--cols", type=int, default=4864)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_gb = args.rows * args.cols * 4 / 1e9
    print(f"{args.rows}x{args.cols}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for qtype in SCALE_OFFSETS:
        raw = random_matrix(qtype, args.rows, args.cols)
        seconds = best_seconds(lambda: dequantize(raw, qtype), args.repeat)
        print(f"{qtype.name:5s} {seconds * 1e3:7.2f} ms  {out_gb / seconds:6.2f} GB/s fp32 out")


if __name__ == "__main__":
    main()
