"""`qwen-lsp bench`: this runtime, llama.cpp and transformers side by side on the same GGUF files.

For each model and engine (each in its own process, so peak RSS is its own): prefill tok/s on a
code prompt, decode tok/s, time to first token of a FIM prompt, peak RSS; ratios ours/llama.cpp and
ours/transformers; weight bytes read per decoded token against the measured memory bandwidth.
Optionally the MoE decode check and the hybrid (qwen3_next) check. Writes JSON and prints a table.
Our model is loaded once before it is measured: building the native kernels and measuring the kernel
choices happen once per machine (both cached), not in every process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..kernels.bandwidth import read_bandwidth_gbs
from .prompts import code_prompt, fim_prompt
from .weight_bytes import gguf_decode_bytes

ENGINES = ("qwen-lsp", "llama.cpp", "transformers")
COLUMNS = (("prefill_tok_s", "prefill tok/s"), ("decode_tok_s", "decode tok/s"), ("ttft_ms", "FIM ttft ms"),
           ("peak_rss_mb", "peak RSS MB"), ("load_s", "load s"), ("decode_mb_per_token", "MB/token"),
           ("bandwidth_gbs", "BW GB/s"), ("bandwidth_use", "BW use %"))


def available_engines() -> list[str]:
    found = {"qwen-lsp": True, "llama.cpp": importlib.util.find_spec("llama_cpp") is not None,
             "transformers": importlib.util.find_spec("transformers") is not None}
    return [engine for engine in ENGINES if found[engine]]


def run_engine(engine: str, model: Path, code_file: Path, fim_file: Path, new_tokens: int, threads: int) -> dict:
    command = [sys.executable, "-m", "inference.bench.engine_runs", engine, str(model), str(code_file),
               str(fim_file), "--new-tokens", str(new_tokens), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=_engine_env())
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _engine_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
    return env


def prepare_ours(model: Path, threads: int) -> None:
    """Load the model once in a process of its own, so the one-time work on a new machine (building
    the native kernels, measuring the kernel choices, both cached) stays out of the measured run."""
    code = f"from inference import load_model; load_model({str(model)!r}, threads={threads}, progress=False)"
    subprocess.run([sys.executable, "-c", code], capture_output=True, env=_engine_env())


def bench_model(path: Path, engines: list[str], threads: int, prompt_tokens: int, fim_tokens: int,
                new_tokens: int, rounds: int = 2) -> dict[str, dict]:
    """Each engine's row: the engines take turns for `rounds` rounds and each keeps its best figures
    (a shared host's speed drifts over minutes, so alternating keeps the comparison fair); its
    bandwidth is measured just before and after each run (the mean)."""
    from inference.checkpoint import open_checkpoint

    tokenizer = open_checkpoint(path).load_tokenizer()
    runs: dict[str, list[dict]] = {engine: [] for engine in engines}
    with tempfile.TemporaryDirectory() as scratch:
        code_file, fim_file = Path(scratch) / "code.txt", Path(scratch) / "fim.txt"
        code_file.write_text(code_prompt(tokenizer, prompt_tokens), encoding="utf-8")
        fim_file.write_text(fim_prompt(tokenizer, fim_tokens), encoding="utf-8")
        if "qwen-lsp" in engines:
            prepare_ours(path, threads)
        for round_number in range(rounds):
            for engine in engines:
                before = read_bandwidth_gbs(threads)
                row = run_engine(engine, path, code_file, fim_file, new_tokens, threads)
                row["bandwidth_gbs"] = (before + read_bandwidth_gbs(threads)) / 2
                runs[engine].append(row)
                print(f"bench: {path.name} {engine} round {round_number + 1} done", file=sys.stderr)
    return {engine: best_of(path, engine, engine_runs) for engine, engine_runs in runs.items()}


def best_of(path: Path, engine: str, engine_runs: list[dict]) -> dict:
    """One row from an engine's rounds: its best prefill, decode, ttft and load time, the highest peak
    RSS, and the bandwidth measured around its best decode; the rounds themselves under `rounds`."""
    good = [run for run in engine_runs if "error" not in run]
    if not good:
        return engine_runs[-1]
    fastest = max(good, key=lambda run: run["decode_tok_s"])
    row = dict(fastest, rounds=engine_runs)
    row.update(prefill_tok_s=max(run["prefill_tok_s"] for run in good), ttft_ms=min(run["ttft_ms"] for run in good),
               load_s=min(run["load_s"] for run in good), peak_rss_mb=max(run["peak_rss_mb"] for run in good))
    if "decode_bytes_per_token" not in row:
        row["decode_bytes_per_token"] = gguf_decode_bytes(path, as_fp32=engine == "transformers")
    row["decode_mb_per_token"] = row["decode_bytes_per_token"] / 1e6
    achieved = row["decode_bytes_per_token"] * row["decode_tok_s"] / 1e9
    row["bandwidth_use"] = 100 * achieved / row["bandwidth_gbs"]
    return row


def ratios(ours: dict, other: dict) -> dict[str, float]:
    """>1 means we are better: throughput ours/other, ttft other/ours; RSS is ours/other (<1: we use less)."""
    return {
        "prefill_tok_s": ours["prefill_tok_s"] / other["prefill_tok_s"],
        "decode_tok_s": ours["decode_tok_s"] / other["decode_tok_s"],
        "ttft_ms": other["ttft_ms"] / ours["ttft_ms"],
        "peak_rss_mb": ours["peak_rss_mb"] / other["peak_rss_mb"],
    }


def format_table(report: dict) -> str:
    header = f"{'model':<22}{'engine':<16}" + "".join(f"{title:>14}" for _, title in COLUMNS) + f"{'same tokens':>13}"
    lines = [header]
    for model, rows in report["models"].items():
        reference = rows.get("llama.cpp", {})
        for engine, row in rows.items():
            if "error" in row:
                lines.append(f"{model:<22}{engine:<16}  error: {row['error']}")
                continue
            cells = "".join(f"{row.get(key, 0):>14.1f}" for key, _ in COLUMNS)
            same = ""
            if reference.get("token_ids") and engine != "llama.cpp":
                a, b = row["token_ids"], reference["token_ids"]
                same = f"{next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))}/{len(b)}"
            lines.append(f"{model:<22}{engine:<16}{cells}{same:>13}")
        for other, values in report["ratios"].get(model, {}).items():
            cells = "".join(f"{values[key]:>13.2f}x" if key in values else f"{'':>14}" for key, _ in COLUMNS)
            lines.append(f"{'':<22}{'ours/' + other:<16}{cells}")
    lines.append("ratios: prefill and decode ours/other, ttft other/ours (>1x: we are faster), RSS ours/other")
    lines.append(f"memory read bandwidth on {report['threads']} threads: {report['bandwidth_gbs']:.1f} GB/s at the start; "
                 "BW use = MB/token x decode tok/s / BW GB/s (measured right before and after that engine's run)")
    if report.get("moe"):
        moe = report["moe"]
        lines.append(f"MoE decode: {moe['moe_ms_per_token']:.1f} ms/token vs dense same-active "
                     f"{moe['dense_ms_per_token']:.1f} ms/token: {moe['ratio']:.2f}x ({moe['description']})")
    if report.get("hybrid"):
        h = report["hybrid"]
        lines.append(f"Hybrid (qwen3_next) vs qwen3_moe: decode {h['hybrid_ms_per_token']:.1f} vs "
                     f"{h['moe_ms_per_token']:.1f} ms/token ({h['hybrid_active_bytes'] / 1e6:.0f} vs "
                     f"{h['moe_active_bytes'] / 1e6:.0f} MB/token), prefill {h['hybrid_prefill_tok_s']:.0f} vs "
                     f"{h['moe_prefill_tok_s']:.0f} tok/s, MTP head draft step {h['mtp_draft_ms_per_step']:.1f} "
                     f"ms ({h['description']})")
    return "\n".join(lines)


def run_bench(models: list[str], engines: list[str] | None = None, threads: int = 2, prompt_tokens: int = 1500,
              fim_tokens: int = 300, new_tokens: int = 128, moe: bool = True, rounds: int = 2) -> dict:
    """Every measurement of one bench run, as a JSON-ready dict."""
    from inference.model_store import resolve_model

    engines = engines or available_engines()
    bandwidth = read_bandwidth_gbs(threads)
    report = dict(threads=threads, prompt_tokens=prompt_tokens, fim_tokens=fim_tokens, new_tokens=new_tokens,
                  rounds=rounds, bandwidth_gbs=bandwidth, load_average=os.getloadavg(), models={}, ratios={})
    for name in models:
        rows = bench_model(resolve_model(name), engines, threads, prompt_tokens, fim_tokens, new_tokens, rounds)
        report["models"][name] = rows
        ours = rows.get("qwen-lsp", {})
        report["ratios"][name] = {
            other: ratios(ours, rows[other]) for other in ("llama.cpp", "transformers")
            if other in rows and "error" not in rows[other] and ours and "error" not in ours
        }
    if moe:
        from .hybrid_decode import hybrid_vs_moe
        from .moe_decode import moe_vs_dense

        report["moe"] = moe_vs_dense(threads)
        report["hybrid"] = hybrid_vs_moe(threads)
    report["load_average_after"] = os.getloadavg()
    return report


def write_report(report: dict, json_out: Path) -> None:
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(report, indent=1))
