"""Completion metrics: exact match, edit similarity, first-line exact match; aggregation."""

from __future__ import annotations

import statistics
from collections import defaultdict


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def edit_similarity(prediction: str, expected: str) -> float:
    """100 * (1 - distance / longer length), on whitespace-trimmed text."""
    prediction, expected = prediction.strip(), expected.strip()
    longest = max(len(prediction), len(expected))
    return 100.0 if longest == 0 else 100.0 * (1 - levenshtein(prediction, expected) / longest)


def exact_match(prediction: str, expected: str) -> bool:
    return prediction.strip() == expected.strip()


def first_line_match(prediction: str, expected: str) -> bool:
    first = lambda text: text.strip().split("\n", 1)[0].strip()
    return first(prediction) == first(expected)


def score(prediction: str, expected: str) -> dict[str, float]:
    return {"em": 100.0 * exact_match(prediction, expected),
            "es": edit_similarity(prediction, expected),
            "first_line_em": 100.0 * first_line_match(prediction, expected)}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean scores and latency percentiles, over all cases, per case kind and (as
    ``project:NAME``) per project of rows that name one."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["kind"]].append(row)
        groups["all"].append(row)
        if row.get("project"):
            groups["project:" + row["project"]].append(row)
    summary = {}
    for kind, items in sorted(groups.items(), key=lambda item: (item[0].startswith("project:"), item[0])):
        entry = {"n": len(items)}
        for metric in ("em", "es", "first_line_em"):
            entry[metric] = round(statistics.fmean(r[metric] for r in items), 1)
        for timing in ("context_ms", "total_ms", "model_ms"):
            values = [r["timings"][timing] for r in items if timing in r["timings"]]
            entry[f"{timing}_p50"] = round(percentile(values, 0.5), 1)
            entry[f"{timing}_p90"] = round(percentile(values, 0.9), 1)
        entry["prompt_tokens_mean"] = round(statistics.fmean(r["prompt_tokens"] for r in items), 1)
        summary[kind] = entry
    return summary
