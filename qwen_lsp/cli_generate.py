"""`qwen-lsp generate`: one raw generation on a model, from the shell."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

DTYPES = ("auto", "float32", "bfloat16")


def add_generate_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate text after a prompt (control tokens like <|fim_prefix|> are parsed)"
    )
    parser.add_argument("--model", default="default", help="known model name, .gguf file or HF model directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="the prompt text")
    source.add_argument("--prompt-file", type=Path, help="read the prompt from this file")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="activation dtype (auto: bf16 for bf16 checkpoints, else fp32)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with text, ids and timings")
    parser.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from inference import GenerationConfig, load_model

    prompt = args.prompt if args.prompt is not None else _read_prompt(args.prompt_file)
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, seed=args.seed, stop_strings=tuple(args.stop),
    )
    load_started = time.perf_counter()
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    lm = load_model(args.model, dtype=dtype, threads=args.threads, progress=not args.json)
    load_ms = (time.perf_counter() - load_started) * 1000
    prompt_ids = lm.tokenizer.encode(prompt, parse_special=True)

    def stream(_token: int, piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    result = lm.generate(prompt_ids, config, on_token=None if args.json else stream)
    if args.json:
        print(json.dumps({
            "model": str(lm.path),
            "text": result.text,
            "token_ids": result.token_ids,
            "prompt_tokens": result.prompt_tokens,
            "generated_tokens": len(result.token_ids),
            "stop_reason": result.stop_reason,
            "load_ms": round(load_ms, 1),
            "ttft_ms": _rounded(result.ttft_ms),
            "prefill_tokens_per_s": _rounded(result.prompt_tokens / (result.prefill_ms / 1000)) if result.prefill_ms else None,
            "decode_tokens_per_s": _rounded(result.decode_tokens_per_s),
            "total_ms": round(result.total_ms, 1),
            "threads": torch.get_num_threads(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
    return 0


def _read_prompt(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"qwen-lsp: error: cannot read prompt file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SystemExit(f"qwen-lsp: error: prompt file {path} is not UTF-8 ({exc.reason})") from exc


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
