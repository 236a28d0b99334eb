"""Side-by-side generation figures: this runtime, llama.cpp and transformers, same GGUF, same threads.

    python -m inference.bench.compare [--models default qwen2.5-coder-1.5b] [--threads 2]

Each engine runs in its own process (peak RSS is per engine). Prints a table with ratios to
llama.cpp and writes the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

DEFAULT_PROMPT = Path(__file__).resolve().parents[2] / "examples" / "bench_fim_prompt.txt"
COLUMNS = ("ttft_ms", "prefill_tok_s", "decode_tok_s", "peak_rss_mb", "load_s")


def run_engine(engine: str, model: Path, prompt_file: Path, new_tokens: int, threads: int) -> dict:
    command = [sys.executable, "-m", "inference.bench.engine_runs", engine, str(model), str(prompt_file),
               "--new-tokens", str(new_tokens), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def available_engines() -> list[str]:
    engines = ["qwen-lsp"]
    if importlib.util.find_spec("llama_cpp"):
        engines.append("llama.cpp")
    if importlib.util.find_spec("transformers"):
        engines.append("transformers")
    return engines


def format_table(results: dict[str, dict[str, dict]]) -> str:
    lines = [f"{'model':<22}{'engine':<14}" + "".join(f"{c:>15}" for c in COLUMNS) + f"{'same tokens':>13}"]
    for model, by_engine in results.items():
        reference = by_engine.get("llama.cpp", {})
        for engine, row in by_engine.items():
            if "error" in row:
                lines.append(f"{model:<22}{engine:<14}  error: {row['error']}")
                continue
            cells = "".join(f"{row.get(c) or 0:>15.1f}" for c in COLUMNS)
            same = ""
            if reference.get("token_ids"):
                a, b = row["token_ids"], reference["token_ids"]
                same = f"{next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))}/{len(b)}"
            lines.append(f"{model:<22}{engine:<14}{cells}{same:>13}")
        if reference and "error" not in reference and "qwen-lsp" in by_engine and "error" not in by_engine["qwen-lsp"]:
            ours = by_engine["qwen-lsp"]
            lines.append(
                f"{'':<22}{'ours/llama':<14}"
                f"{reference['ttft_ms'] / ours['ttft_ms']:>14.2f}x"  # lower ttft is better: llama/ours
                f"{ours['prefill_tok_s'] / reference['prefill_tok_s']:>14.2f}x"
                f"{ours['decode_tok_s'] / reference['decode_tok_s']:>14.2f}x"
                f"{ours['peak_rss_mb'] / reference['peak_rss_mb']:>14.2f}x"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from inference.model_store import resolve_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
    parser.add_argument("--engines", nargs="+", default=None, help="default: every installed engine")
    parser.add_argument("--prompt-file", type=Path, default=DEFAULT_PROMPT)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", type=Path, default=Path("bench-results/compare.json"))
    args = parser.parse_args(argv)
    engines = args.engines or available_engines()
    results: dict[str, dict[str, dict]] = {}
    for name in args.models:
        path = resolve_model(name)
        results[name] = {}
        for engine in engines:
            results[name][engine] = run_engine(engine, path, args.prompt_file, args.new_tokens, args.threads)
            print(f"{name} {engine}: done", file=sys.stderr)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=1))
    print(f"threads={args.threads} prompt={args.prompt_file.name} new_tokens={args.new_tokens}")
    print(format_table(results))
    print("ours/llama: ttft and RSS as llama/ours and ours/llama (ttft >1x = we are faster; RSS <1x = we use less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
