"""`qwen-lsp bench`: this runtime vs llama.cpp vs transformers, side by side, one run; or, with
`--replay TRACE`, a typing session through the engine (see cli_bench_replay)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_bench_replay import DEFAULT_NEW_TOKENS, add_replay_arguments, run_replay, wants_replay

COMPARE_NEW_TOKENS = 128
COMPARE_JSON = Path("bench-results/bench.json")


def add_bench_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="compare speed and memory with llama.cpp and transformers, or replay a typing session",
        description="Prefill, decode, FIM time-to-first-token and peak RSS per engine (each in its own process), "
                    "with ratios, decode bandwidth use, the MoE decode check and the hybrid (qwen3_next) check. "
                    "llama.cpp comes from the `bench` extra (scripts/install-llama-cpp); missing engines are skipped. With --replay TRACE (or "
                    "--replay-repo REPO), a recorded typing session through the engine instead: prefix-cache "
                    "share, latency and speculation per request.",
    )
    parser.add_argument("--models", nargs="+", default=["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
    parser.add_argument("--engines", nargs="+", default=None, help="default: every installed engine")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=1500)
    parser.add_argument("--fim-tokens", type=int, default=300)
    parser.add_argument("--new-tokens", type=int, default=None,
                        help=f"tokens to decode (default {COMPARE_NEW_TOKENS}; {DEFAULT_NEW_TOKENS} per replayed request)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="engines take turns this many times, each keeping its best figures (default 2)")
    parser.add_argument("--no-moe", dest="moe", action="store_false", help="skip the synthetic MoE and hybrid checks")
    parser.add_argument("--json-out", type=Path, default=None, help=f"default {COMPARE_JSON} (replay: none)")
    add_replay_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if wants_replay(args):
        return run_replay(args)
    from inference.bench.compare import format_table, run_bench, write_report

    new_tokens, json_out = args.new_tokens or COMPARE_NEW_TOKENS, args.json_out or COMPARE_JSON
    report = run_bench(args.models, args.engines, args.threads, args.prompt_tokens, args.fim_tokens,
                       new_tokens, args.moe, max(1, args.rounds))
    write_report(report, json_out)
    print(f"threads={args.threads} code prompt={args.prompt_tokens} tok, FIM prompt={args.fim_tokens} tok, "
          f"decode={new_tokens} tok, best of {report['rounds']} alternated rounds per engine, "
          f"load average {report['load_average'][0]:.1f} -> "
          f"{report['load_average_after'][0]:.1f}; JSON: {json_out}")
    print(format_table(report))
    return 0
