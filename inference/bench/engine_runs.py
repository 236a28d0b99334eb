"""One engine, one model, one measured run: load, prefill a prompt, greedy-decode N tokens.

Each run happens in its own process (`python -m inference.bench.engine_runs ...`) so its peak
RSS is its own. Prints one JSON object. EOS is ignored so every engine decodes exactly N tokens.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(model: str, prompt: str, new_tokens: int, threads: int) -> dict:
    from inference import GenerationConfig, load_model

    started = time.perf_counter()
    lm = load_model(model, threads=threads, progress=False)
    load_s = time.perf_counter() - started
    rss_loaded = _peak_rss_mb()
    ids = lm.tokenizer.encode(prompt, parse_special=True)
    result = lm.generate(ids, GenerationConfig(max_new_tokens=new_tokens, stop_ids=frozenset()))
    return dict(load_s=load_s, prompt_tokens=len(ids), ttft_ms=result.ttft_ms,
                prefill_tok_s=len(ids) / (result.prefill_ms / 1000), decode_tok_s=result.decode_tokens_per_s,
                rss_after_load_mb=rss_loaded, token_ids=result.token_ids)


def run_llama_cpp(model: str, prompt: str, new_tokens: int, threads: int) -> dict:
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    started = time.perf_counter()
    llm = Llama(model_path=model, n_ctx=4096, n_threads=threads, n_threads_batch=threads, n_batch=512,
                verbose=False)
    load_s = time.perf_counter() - started
    rss_loaded = _peak_rss_mb()
    ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def last_argmax() -> int:
        logits = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),))))

    started = time.perf_counter()
    llm.eval(ids)
    token = last_argmax()
    first = time.perf_counter()
    out = [token]
    prefill_s = first - started
    for _ in range(new_tokens - 1):
        llm.eval([token])
        token = last_argmax()
        out.append(token)
    decode_s = time.perf_counter() - first
    return dict(load_s=load_s, prompt_tokens=len(ids), ttft_ms=prefill_s * 1000, prefill_tok_s=len(ids) / prefill_s,
                decode_tok_s=(new_tokens - 1) / decode_s, rss_after_load_mb=rss_loaded, token_ids=out)


def run_transformers(model: str, prompt: str, new_tokens: int, threads: int) -> dict:
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    path = Path(model)
    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    net = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    load_s = time.perf_counter() - started
    rss_loaded = _peak_rss_mb()
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.inference_mode():
        started = time.perf_counter()
        out = net(ids, use_cache=True)
        token = int(out.logits[0, -1].argmax())
        first = time.perf_counter()
        tokens, past = [token], out.past_key_values
        for _ in range(new_tokens - 1):
            out = net(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past, token = out.past_key_values, int(out.logits[0, -1].argmax())
            tokens.append(token)
        decode_s = time.perf_counter() - first
    prefill_s = first - started
    return dict(load_s=load_s, prompt_tokens=ids.shape[1], ttft_ms=prefill_s * 1000,
                prefill_tok_s=ids.shape[1] / prefill_s, decode_tok_s=(new_tokens - 1) / decode_s,
                rss_after_load_mb=rss_loaded, token_ids=tokens)


ENGINES = {"qwen-lsp": run_ours, "llama.cpp": run_llama_cpp, "transformers": run_transformers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("model")
    parser.add_argument("prompt_file")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    with open(args.prompt_file, encoding="utf-8") as handle:
        prompt = handle.read()
    report = ENGINES[args.engine](args.model, prompt, args.new_tokens, args.threads)
    report["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
