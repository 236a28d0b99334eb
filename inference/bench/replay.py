"""Replay a typing trace (see `make_trace`) against the engine and measure each request.

Prompts are repository-level FIM prompts in Qwen2.5-Coder's format: the context files, then the
current file with the cursor. The file window starts at a line rounded down to a block (a third of
the window) and stays anchored there while the window from it holds half to twice the configured
lines, so the prompt before the cursor stays stable while the user types and moves around nearby
(what makes prefix reuse possible).
Each mode replays the same requests on its own engine, taking turns; greedy decoding, so the speculative modes
must produce the same tokens as plain decoding (checked, and reported as `identical`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..engine import Engine, SpeculationConfig
from ..sampling import GenerationConfig


@dataclass
class ReplayRequest:
    kind: str  # fresh | edit
    path: str
    first_of_file: bool
    prompt_ids: list[int]


@dataclass
class RequestMeasure:
    kind: str
    first_of_file: bool
    prompt_tokens: int
    cached_tokens: int
    computed_tokens: int
    ttft_ms: float
    total_ms: float
    new_tokens: int
    decode_ms: float
    drafted: int
    accepted: int
    token_ids: list[int] = field(repr=False)


def window_start(line: int, prefix_lines: int, anchor: int | None = None) -> int:
    """The file window's first line for a cursor on `line`: `anchor` (the previous start) while the
    window from it holds half to twice `prefix_lines` lines, else `prefix_lines` up, rounded down to a block."""
    if anchor is not None and anchor <= max(0, line - prefix_lines // 2) and line <= anchor + 2 * prefix_lines:
        return anchor
    block = max(1, prefix_lines // 3)
    return max(0, (line - prefix_lines) // block * block)


def fim_prompt(repo: str, context: dict[str, str], path: str, text: str, cursor: int,
               first: int, suffix_lines: int) -> str:
    """Qwen2.5-Coder repository-level FIM prompt with the file window from line `first`."""
    start = 0
    for _ in range(first):
        start = text.index("\n", start) + 1
    suffix = text[cursor:]
    cut = 0
    for _ in range(suffix_lines):
        nxt = suffix.find("\n", cut)
        if nxt < 0:
            cut = len(suffix)
            break
        cut = nxt + 1
    parts = [f"<|repo_name|>{repo}\n"]
    parts += [f"<|file_sep|>{p}\n{t}" for p, t in context.items()]
    parts.append(f"<|file_sep|>{path}\n<|fim_prefix|>{text[start:cursor]}<|fim_suffix|>{suffix[:cut]}<|fim_middle|>")
    return "".join(parts)


def requests_from_trace(trace: dict, tokenizer, *, prefix_lines: int = 96, suffix_lines: int = 8,
                        context_chars: int = 6000, limit: int | None = None) -> list[ReplayRequest]:
    """Apply the trace's edits in order; build a prompt at every event marked as a request."""
    files = dict(trace["files"])
    context, used = {}, 0
    for p in trace.get("context", []):
        if used + len(files[p]) <= context_chars:
            context[p] = files[p]
            used += len(files[p])
    requests, seen, anchors = [], set(), {}
    for event in trace["events"]:
        text = files[event["path"]]
        offset = event["offset"]
        files[event["path"]] = text = text[:offset] + event["insert"] + text[offset + event["delete"]:]
        if not event["request"]:
            continue
        cursor = offset + len(event["insert"])
        first = anchors[event["path"]] = window_start(text.count("\n", 0, cursor), prefix_lines, anchors.get(event["path"]))
        prompt = fim_prompt(trace["repo"], context, event["path"], text, cursor, first, suffix_lines)
        requests.append(ReplayRequest(event["kind"], event["path"], event["path"] not in seen,
                                      tokenizer.encode(prompt, parse_special=True)))
        seen.add(event["path"])
        if limit is not None and len(requests) >= limit:
            break
    return requests


def replay(engines: dict[str, Engine], requests: list[ReplayRequest], config: GenerationConfig,
           on_measure: Callable[[str, RequestMeasure], None] | None = None) -> dict[str, list[RequestMeasure]]:
    """Run every request in order on each engine (one document, as an editor would). Modes take
    turns request by request, so a change in machine load affects them alike."""
    measures: dict[str, list[RequestMeasure]] = {mode: [] for mode in engines}
    for request in requests:
        for mode, engine in engines.items():
            started = time.perf_counter()
            result = engine.generate(request.prompt_ids, config, request_key=request.path)
            total_ms = (time.perf_counter() - started) * 1000
            t = result.timings
            ttft = result.ttft_ms if result.ttft_ms is not None else total_ms
            measure = RequestMeasure(
                request.kind, request.first_of_file, len(request.prompt_ids), t["reused_prompt_tokens"],
                t["computed_prompt_tokens"], ttft, total_ms, len(result.token_ids), total_ms - ttft,
                t["drafted_tokens"], t["accepted_tokens"], result.token_ids)
            measures[mode].append(measure)
            if on_measure is not None:
                on_measure(mode, measure)
    return measures


MODES = {
    "plain": dict(reuse_prefix=False, speculation=SpeculationConfig(ngram=False, mtp=False)),
    "cache": dict(reuse_prefix=True, speculation=SpeculationConfig(ngram=False, mtp=False)),
    "ngram": dict(reuse_prefix=True, speculation=SpeculationConfig(ngram=True, mtp=False)),
}


def make_engine(lm, mode: str, draft=None, prefix_cache_mib: float = 512.0, draft_initial: int = 4,
                draft_max: int = 8) -> Engine:
    """An engine for one mode: plain (no reuse, no speculation), cache, ngram, or draft."""
    if mode == "draft":
        speculation = SpeculationConfig(ngram=False, draft_model=draft.model, draft_initial=draft_initial,
                                        draft_max=draft_max)
        return Engine(lm.model, lm.tokenizer, prefix_cache_mib=prefix_cache_mib, speculation=speculation)
    return Engine(lm.model, lm.tokenizer, prefix_cache_mib=prefix_cache_mib, **MODES[mode])


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarize(measures: list[RequestMeasure], baseline: list[RequestMeasure] | None = None,
              plain_decode: list[RequestMeasure] | None = None) -> dict:
    """Aggregate one mode: cache share after each file's first request, latency percentiles, and
    for speculation the acceptance rate and decode speed-up over `plain_decode` (same requests)."""
    later = [m for m in measures if not m.first_of_file]
    summary = dict(
        requests=len(measures),
        served_from_cache=sum(m.cached_tokens for m in later) / max(1, sum(m.prompt_tokens for m in later)),
        ttft_ms_p50=_percentile([m.ttft_ms for m in measures], 0.5),
        ttft_ms_p90=_percentile([m.ttft_ms for m in measures], 0.9),
        latency_ms_p50=_percentile([m.total_ms for m in measures], 0.5),
        latency_ms_p90=_percentile([m.total_ms for m in measures], 0.9),
    )
    drafted = sum(m.drafted for m in measures)
    if drafted:
        summary["acceptance_rate"] = sum(m.accepted for m in measures) / drafted
    if baseline is not None:
        for measure in ("ttft", "latency"):
            key = "ttft_ms" if measure == "ttft" else "total_ms"
            ours = _percentile([getattr(m, key) for m in measures], 0.5)
            summary[f"{measure}_p50_vs_baseline"] = ours / _percentile([getattr(m, key) for m in baseline], 0.5)
    if plain_decode is not None:
        summary["identical"] = all(a.token_ids == b.token_ids for a, b in zip(measures, plain_decode))
        for kind in ("fresh", "edit"):
            pairs = [(a, b) for a, b in zip(measures, plain_decode) if a.kind == kind and a.new_tokens > 1]
            ours = sum(a.decode_ms for a, _ in pairs)
            if pairs and ours > 0:
                summary[f"decode_speedup_{kind}"] = sum(b.decode_ms for _, b in pairs) / ours
    return summary
