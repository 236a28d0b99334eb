"""One engine, one model, one measured run, in its own process (so peak RSS is its own).

    python -m inference.bench.engine_runs ENGINE MODEL CODE_PROMPT FIM_PROMPT [--new-tokens 128]

Loads the model, prefills the code prompt and greedy-decodes `--new-tokens` tokens (EOS ignored),
then times the first token of the FIM prompt on a fresh sequence. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

CONTEXT = 2048


def _peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM starts afresh at exec, where Linux carries ru_maxrss over
    from the parent (the bench process, which holds a model: its RSS floored every engine's peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Ours:
    def __init__(self, model: str, threads: int):
        from inference import load_model

        self.lm = load_model(model, threads=threads, max_context=CONTEXT, progress=False)
        self.cache = self.lm.model.new_cache(CONTEXT)

    def tokenize(self, text: str) -> list[int]:
        return self.lm.tokenizer.encode(text, parse_special=True)

    def first_token(self, ids: list[int]) -> int:
        from inference.generate import prefill

        self.cache.truncate(0)
        return int(prefill(self.lm.model, self.cache, ids, chunk=512, greedy=True).argmax())

    def next_token(self, token: int) -> int:
        import torch

        return int(self.lm.model.forward(torch.tensor([token]), self.cache, last_only=True, greedy=True)[-1].argmax())

    def decode_bytes_per_token(self) -> int:
        return self.lm.model.decode_weight_bytes


class LlamaCpp:
    def __init__(self, model: str, threads: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=model, n_ctx=CONTEXT, n_threads=threads, n_threads_batch=threads, n_batch=512,
                         verbose=False)

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _argmax(self) -> int:
        import llama_cpp
        import numpy as np

        logits = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(logits, shape=(self.llm.n_vocab(),))))

    def first_token(self, ids: list[int]) -> int:
        self.llm.reset()
        self.llm.eval(ids)
        return self._argmax()

    def next_token(self, token: int) -> int:
        self.llm.eval([token])
        return self._argmax()


class Transformers:
    def __init__(self, model: str, threads: int):
        from pathlib import Path

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        path = Path(model)
        self.tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        self.net = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
        self.past = None

    def tokenize(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids

    def _run(self, ids: list[int]) -> int:
        import torch

        with torch.inference_mode():
            out = self.net(torch.tensor([ids]), past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        return int(out.logits[0, -1].argmax())

    def first_token(self, ids: list[int]) -> int:
        self.past = None
        return self._run(ids)

    def next_token(self, token: int) -> int:
        return self._run([token])


ENGINES = {"qwen-lsp": Ours, "llama.cpp": LlamaCpp, "transformers": Transformers}


def measure(engine: str, model: str, code_prompt: str, fim_prompt: str, new_tokens: int, threads: int) -> dict:
    started = time.perf_counter()
    runner = ENGINES[engine](model, threads)
    report = dict(load_s=time.perf_counter() - started, rss_after_load_mb=_peak_rss_mb())

    ids = runner.tokenize(code_prompt)
    started = time.perf_counter()
    token = runner.first_token(ids)
    prefilled = time.perf_counter()
    tokens = [token]
    for _ in range(new_tokens - 1):
        token = runner.next_token(token)
        tokens.append(token)
    decoded = time.perf_counter()

    fim_ids = runner.tokenize(fim_prompt)
    started_fim = time.perf_counter()
    runner.first_token(fim_ids)
    report.update(
        prompt_tokens=len(ids), prefill_tok_s=len(ids) / (prefilled - started),
        decode_tok_s=(new_tokens - 1) / (decoded - prefilled), fim_tokens=len(fim_ids),
        ttft_ms=(time.perf_counter() - started_fim) * 1000, token_ids=tokens,
    )
    if hasattr(runner, "decode_bytes_per_token"):
        report["decode_bytes_per_token"] = runner.decode_bytes_per_token()
    report["peak_rss_mb"] = _peak_rss_mb()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("model")
    parser.add_argument("code_prompt_file")
    parser.add_argument("fim_prompt_file")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    with open(args.code_prompt_file, encoding="utf-8") as code, open(args.fim_prompt_file, encoding="utf-8") as fim:
        report = measure(args.engine, args.model, code.read(), fim.read(), args.new_tokens, args.threads)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
