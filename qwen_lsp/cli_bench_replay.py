"""`qwen-lsp bench --replay TRACE`: replay a recorded typing session against the engine.

Prints one line per request and mode, then a JSON summary per model and mode: share of prompt
tokens served from the prefix cache (after each file's first request), ttft and latency p50/p90,
and for the speculative modes acceptance rate and decode speed-up over the `cache` mode on the
same requests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MODE_CHOICES = ("plain", "cache", "ngram", "draft")
DEFAULT_NEW_TOKENS = 32


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """The replay options of `qwen-lsp bench` (the model, threads, new tokens and JSON output are shared)."""
    group = parser.add_argument_group("typing replay (instead of the engine comparison)")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--replay", type=Path, metavar="TRACE",
                        help="replay this trace JSON (made by python -m inference.bench.make_trace)")
    source.add_argument("--replay-repo", type=Path, metavar="REPO", help="make a trace from this git repository and replay it")
    group.add_argument("--files", type=int, default=2, help="files per trace made by --replay-repo")
    group.add_argument("--draft", default=None, help="draft model for the 'draft' mode (same tokenizer)")
    group.add_argument("--modes", default="plain,cache,ngram", help=f"comma-separated, from {', '.join(MODE_CHOICES)}")
    group.add_argument("--draft-initial", type=int, default=4)
    group.add_argument("--draft-max", type=int, default=8)
    group.add_argument("--limit", type=int, default=None, help="replay only the first N requests")
    group.add_argument("--prefix-lines", type=int, default=96)
    group.add_argument("--suffix-lines", type=int, default=8,
                       help="lines after the cursor (recomputed on every keystroke; the server's CPU profile is ~4)")
    group.add_argument("--context-chars", type=int, default=6000, help="characters of other files in the prompt")
    group.add_argument("--cache-mib", type=float, default=512.0, help="prefix cache budget")


def wants_replay(args: argparse.Namespace) -> bool:
    return args.replay is not None or args.replay_repo is not None


def run_replay(args: argparse.Namespace) -> int:
    """Replay the trace on each of `--models`, every mode on the same requests."""
    import os

    from inference import GenerationConfig, load_model
    from inference.bench.make_trace import make_trace
    from inference.bench.replay import make_engine, replay, requests_from_trace, summarize

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODE_CHOICES]
    if unknown or ("draft" in modes and not args.draft):
        raise ValueError(f"bad --modes {unknown}" if unknown else "the draft mode needs --draft")
    trace = json.loads(args.replay.read_text()) if args.replay else make_trace(args.replay_repo, files=args.files)
    config = GenerationConfig(max_new_tokens=args.new_tokens or DEFAULT_NEW_TOKENS, stop_strings=("\n\n",))
    draft = load_model(args.draft, threads=args.threads, progress=False) if args.draft else None
    report = dict(load_average=os.getloadavg(), models={})
    for model in args.models:
        lm = load_model(model, threads=args.threads, progress=False)
        requests = requests_from_trace(trace, lm.tokenizer, prefix_lines=args.prefix_lines,
                                       suffix_lines=args.suffix_lines, context_chars=args.context_chars,
                                       limit=args.limit)
        engines = {mode: make_engine(lm, mode, draft, args.cache_mib, args.draft_initial, args.draft_max)
                   for mode in modes}
        measured = replay(engines, requests, config, lambda mode, m: _print_measure(model, mode, m))
        summaries = {}
        for mode, measures in measured.items():
            baseline = measured.get("plain") if mode != "plain" else None
            reference = measured.get("cache") if mode in ("ngram", "draft") else None
            summaries[mode] = summarize(measures, baseline, reference)
        report["models"][model] = dict(
            summaries=summaries, requests={mode: [vars(m) for m in ms] for mode, ms in measured.items()})
        print(json.dumps({model: summaries}, indent=1))
    report["load_average_after"] = os.getloadavg()
    print(f"load average {report['load_average'][0]:.1f} -> {report['load_average_after'][0]:.1f}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=1))
    sys.stdout.flush()
    return 0


def _print_measure(model: str, mode: str, m) -> None:
    print(f"{model} {mode:6} {m.kind:5} prompt={m.prompt_tokens:5} cached={m.cached_tokens:5} "
          f"computed={m.computed_tokens:5} new={m.new_tokens:3} ttft={m.ttft_ms:8.0f}ms "
          f"total={m.total_ms:8.0f}ms accepted={m.accepted}/{m.drafted}", flush=True)
