"""`qwen-lsp bench-replay`: replay a recorded typing session against the engine.

Prints one line per request and mode, then a JSON summary per mode: share of prompt tokens served
from the prefix cache (after each file's first request), ttft and latency p50/p90, and for the
speculative modes acceptance rate and decode speed-up over the `cache` mode on the same requests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MODE_CHOICES = ("plain", "cache", "ngram", "draft")


def add_bench_replay_command(subparsers) -> None:
    parser = subparsers.add_parser("bench-replay", help="replay a typing trace against the engine")
    add_replay_arguments(parser)
    parser.set_defaults(run=run_bench_replay)


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", type=Path, help="trace JSON made by --make-trace-from (or make_trace)")
    source.add_argument("--make-trace-from", type=Path, metavar="REPO", help="make a trace from this git repository")
    parser.add_argument("--files", type=int, default=2, help="files per generated trace")
    parser.add_argument("--model", default="default", help="known model name, .gguf file or HF model directory")
    parser.add_argument("--draft", default=None, help="draft model for the 'draft' mode (same tokenizer)")
    parser.add_argument("--modes", default="plain,cache,ngram",
                        help=f"comma-separated, from {', '.join(MODE_CHOICES)}")
    parser.add_argument("--draft-initial", type=int, default=4)
    parser.add_argument("--draft-max", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N requests")
    parser.add_argument("--prefix-lines", type=int, default=96)
    parser.add_argument("--context-chars", type=int, default=6000, help="characters of other files in the prompt")
    parser.add_argument("--cache-mib", type=float, default=512.0, help="prefix cache budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", type=Path, default=None, help="write per-request measures and summaries")


def run_bench_replay(args: argparse.Namespace) -> int:
    from inference import GenerationConfig, load_model
    from inference.bench.make_trace import make_trace
    from inference.bench.replay import make_engine, replay, requests_from_trace, summarize

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODE_CHOICES]
    if unknown or ("draft" in modes and not args.draft):
        raise ValueError(f"bad --modes {unknown}" if unknown else "the draft mode needs --draft")
    trace = json.loads(args.trace.read_text()) if args.trace else make_trace(args.make_trace_from, files=args.files)
    lm = load_model(args.model, threads=args.threads, progress=False)
    draft = load_model(args.draft, threads=args.threads, progress=False) if args.draft else None
    requests = requests_from_trace(trace, lm.tokenizer, prefix_lines=args.prefix_lines,
                                   context_chars=args.context_chars, limit=args.limit)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, stop_strings=("\n\n",))
    engines = {mode: make_engine(lm, mode, draft, args.cache_mib, args.draft_initial, args.draft_max)
               for mode in modes}
    measured = replay(engines, requests, config, _print_measure)
    summaries = {}
    for mode, measures in measured.items():
        baseline = measured.get("plain") if mode != "plain" else None
        reference = measured.get("cache") if mode in ("ngram", "draft") else None
        summaries[mode] = summarize(measures, baseline, reference)
    print(json.dumps(summaries, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps(dict(
            summaries=summaries, requests={mode: [vars(m) for m in ms] for mode, ms in measured.items()}), indent=1))
    sys.stdout.flush()
    return 0


def _print_measure(mode: str, m) -> None:
    print(f"{mode:6} {m.kind:5} prompt={m.prompt_tokens:5} cached={m.cached_tokens:5} "
          f"computed={m.computed_tokens:5} new={m.new_tokens:3} ttft={m.ttft_ms:8.0f}ms "
          f"total={m.total_ms:8.0f}ms accepted={m.accepted}/{m.drafted}", flush=True)
