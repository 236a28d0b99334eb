"""The ``qwen-lsp complete`` and ``qwen-lsp eval`` subcommands (wired into qwen_lsp.cli)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

from .context.workspace_index import WorkspaceIndex
from .pipeline import STRATEGIES, CompletionPipeline, PipelineConfig
from .prompt import Budgets


def _add_budget_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="model name, .gguf path or HF dir")
    parser.add_argument("--device-profile", choices=("cpu", "gpu"), default="cpu",
                        help="default token budgets (cpu keeps the per-keystroke work small)")
    parser.add_argument("--context-tokens", type=int, help="repo context budget in tokens")
    parser.add_argument("--prefix-tokens", type=int, help="local prefix window in tokens")
    parser.add_argument("--suffix-tokens", type=int, help="local suffix window in tokens")
    parser.add_argument("--max-new-tokens", type=int, default=64)


def _config(args: argparse.Namespace, strategy: str) -> PipelineConfig:
    budgets = Budgets.for_device(args.device_profile)
    overrides = {name: value for name, value in (
        ("context_tokens", args.context_tokens), ("prefix_tokens", args.prefix_tokens),
        ("suffix_tokens", args.suffix_tokens)) if value is not None}
    return PipelineConfig(budgets=replace(budgets, **overrides), strategy=strategy,
                          max_new_tokens=args.max_new_tokens)


def add_complete_command(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("complete", help="complete at a position in a file",
                                   description="Complete at FILE:LINE:COL (1-based, columns in "
                                               "characters) and print the suggestion.")
    parser.add_argument("position", metavar="FILE:LINE:COL")
    parser.add_argument("--workspace", help="workspace root (default: the file's directory)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="repo")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.add_argument("--show-prompt", action="store_true", help="print the prompt too")
    _add_budget_options(parser)
    parser.set_defaults(run=run_complete)
    return parser


def run_complete(args: argparse.Namespace) -> int:
    from inference import load_model

    try:
        path, line_text, col_text = args.position.rsplit(":", 2)
        line, col = int(line_text) - 1, int(col_text) - 1
    except ValueError:
        print(f"error: expected FILE:LINE:COL, got {args.position!r}", file=sys.stderr)
        return 2
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    workspace = args.workspace or os.path.dirname(os.path.abspath(path))
    index = WorkspaceIndex(workspace)
    index.index_all()
    lm = load_model(args.model)
    pipeline = CompletionPipeline(lm, index, _config(args, args.strategy))
    suggestion = pipeline.complete(os.path.abspath(path), text, max(0, line), max(0, col))
    if args.json:
        print(json.dumps({
            "suggestion": suggestion.text, "raw": suggestion.raw,
            "multiline": suggestion.multiline, "timings_ms": suggestion.timings,
            "prompt_tokens": len(suggestion.prompt.ids), "prompt_mode": suggestion.prompt.mode,
            "snippets": [{"path": s.path, "start_line": s.start_line, "source": s.source,
                          "tokens": s.tokens} for s in suggestion.snippets],
            **({"prompt": suggestion.prompt.text} if args.show_prompt else {})}, indent=2))
        return 0
    if args.show_prompt:
        print(f"--- prompt ({len(suggestion.prompt.ids)} tokens, {suggestion.prompt.mode}) ---")
        print(suggestion.prompt.text)
        print("--- suggestion ---")
    print(suggestion.text)
    return 0


def add_eval_command(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("eval", help="score the pipeline on FIM cases",
                                   description="Run JSONL FIM cases through the full pipeline "
                                               "and report exact match, edit similarity and "
                                               "first-line exact match per case kind, with "
                                               "latency.")
    parser.add_argument("cases", help="JSONL of cases (see qwen_lsp.eval.make_cases)")
    parser.add_argument("--strategy", default="repo",
                        help="none, repo, random-chunks, or a comma-separated list to compare")
    parser.add_argument("--limit", type=int, help="run N cases spread over workspaces and kinds")
    parser.add_argument("--kinds", help="only these case kinds, comma-separated (e.g. line,call_args)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--rows", help="also write per-case results to this JSONL file")
    _add_budget_options(parser)
    parser.set_defaults(run=run_eval)
    return parser


def run_eval(args: argparse.Namespace) -> int:
    from inference import load_model

    from .eval.cases import load_cases, spread
    from .eval.metrics import summarize
    from .eval.runner import run_cases

    strategies = [s.strip() for s in args.strategy.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        print(f"error: unknown strategy {unknown}; choose from {STRATEGIES}", file=sys.stderr)
        return 2
    cases = load_cases(args.cases)
    if args.kinds:
        kinds = {kind.strip() for kind in args.kinds.split(",")}
        cases = [case for case in cases if case.kind in kinds]
    cases = spread(cases, args.limit)
    lm = load_model(args.model)
    rows_out = open(args.rows, "w", encoding="utf-8") if args.rows else None

    def write(row: dict) -> None:
        if rows_out is not None:
            rows_out.write(json.dumps(row) + "\n")
            rows_out.flush()

    try:
        rows = run_cases(lm, cases, {s: _config(args, s) for s in strategies}, on_row=write)
    finally:
        if rows_out is not None:
            rows_out.close()
    summaries = {s: summarize([r for r in rows if r["config"] == s]) for s in strategies
                 if any(r["config"] == s for r in rows)}
    if args.json:
        print(json.dumps(summaries, indent=2))
    else:
        print(format_table(summaries))
    return 0


def format_table(summaries: dict[str, dict[str, dict[str, float]]]) -> str:
    """One line per (strategy, kind or project): n, EM, ES, first-line EM, latency percentiles."""
    header = (f"{'strategy':<14}{'kind':<28}{'n':>4}{'EM':>7}{'ES':>7}{'1st-EM':>8}"
              f"{'ctx p50':>9}{'ctx p90':>9}{'total p50':>11}{'prompt tok':>12}")
    lines = [header, "-" * len(header)]
    for strategy, summary in summaries.items():
        for kind, s in summary.items():
            lines.append(f"{strategy:<14}{kind:<28}{s['n']:>4}{s['em']:>7.1f}{s['es']:>7.1f}"
                         f"{s['first_line_em']:>8.1f}{s['context_ms_p50']:>9.1f}"
                         f"{s['context_ms_p90']:>9.1f}{s['total_ms_p50']:>11.1f}"
                         f"{s['prompt_tokens_mean']:>12.1f}")
    return "\n".join(lines)
