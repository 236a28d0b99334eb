"""Measure `inference.quants.dequantize` throughput in GB/s of fp32 output.

Usage: PYTHONPATH=. python scripts/bench_dequant.py [--rows 896] [--cols 4864] [--threads 2] [--repeat 5] [--reference]
Blocks are random bytes with sane fp16 scale fields; the best of `--repeat` runs is reported, as
wall-clock throughput and as the process CPU time (steadier than wall-clock on a shared machine).
The default shape is a Qwen2.5-0.5B ffn_down weight (K-quant rows must be multiples of 256 values).
--reference also times gguf-py's numpy dequantization of the same blocks, for comparison.
"""

from __future__ import annotations

import argparse
import time

import gguf
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


def best_seconds(fn, repeat: int) -> tuple[float, float]:
    """Best wall-clock and best process CPU seconds of `repeat` calls, after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=896)
    parser.add_argument("--cols", type=int, default=4864)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference", action="store_true", help="also time gguf.quants.dequantize (numpy)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_gb = args.rows * args.cols * 4 / 1e9
    print(f"{args.rows}x{args.cols}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for qtype in SCALE_OFFSETS:
        raw = random_matrix(qtype, args.rows, args.cols)
        wall, cpu = best_seconds(lambda: dequantize(raw, qtype), args.repeat)
        line = f"{qtype.name:5s} {wall * 1e3:7.2f} ms  {out_gb / wall:6.2f} GB/s fp32 out   cpu {cpu * 1e3:7.2f} ms"
        if args.reference:
            blocks = raw.numpy()
            wall, _ = best_seconds(lambda: gguf.quants.dequantize(blocks, qtype), 1)
            line += f"   gguf-py numpy {wall * 1e3:7.2f} ms  {out_gb / wall:6.2f} GB/s"
        print(line)


if __name__ == "__main__":
    main()
