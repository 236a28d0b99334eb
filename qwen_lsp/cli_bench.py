"""`qwen-lsp bench`: this runtime vs llama.cpp vs transformers, side by side, one run."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_bench_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="compare speed and memory with llama.cpp and transformers on the same GGUF files",
        description="Prefill, decode, FIM time-to-first-token and peak RSS per engine (each in its own process), "
                    "with ratios, decode bandwidth use, the MoE decode check and the hybrid (qwen3_next) check. llama.cpp comes from the `bench` "
                    "extra (scripts/install-llama-cpp); missing engines are skipped.",
    )
    parser.add_argument("--models", nargs="+", default=["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
    parser.add_argument("--engines", nargs="+", default=None, help="default: every installed engine")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=1500)
    parser.add_argument("--fim-tokens", type=int, default=300)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--no-moe", dest="moe", action="store_false", help="skip the synthetic MoE and hybrid checks")
    parser.add_argument("--json-out", type=Path, default=Path("bench-results/bench.json"))
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from inference.bench.compare import format_table, run_bench, write_report

    report = run_bench(args.models, args.engines, args.threads, args.prompt_tokens, args.fim_tokens,
                       args.new_tokens, args.moe)
    write_report(report, args.json_out)
    print(f"threads={args.threads} code prompt={args.prompt_tokens} tok, FIM prompt={args.fim_tokens} tok, "
          f"decode={args.new_tokens} tok, load average {report['load_average'][0]:.1f} -> "
          f"{report['load_average_after'][0]:.1f}; JSON: {args.json_out}")
    print(format_table(report))
    return 0
