"""A loaded model with its tokenizer: the runtime's public object."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from .checkpoint import open_checkpoint
from .generate import GenerationResult, OnToken, ShouldStop, generate
from .model import QwenModel, build_model
from .sampling import GenerationConfig
from .tokenizer import Tokenizer


class LanguageModel:
    """Thread-safe generation over one model. Keeps the last sequence's KV cache and reuses its
    longest common token prefix with the next prompt."""

    def __init__(self, model: QwenModel, tokenizer: Tokenizer, path: Path, max_context: int | None = None):
        self.model, self.tokenizer, self.path = model, tokenizer, path
        self.config = model.config
        self._cache = model.new_cache(min(max_context or model.config.context_length, model.config.context_length))
        self._cached_ids: list[int] = []
        self._lock = threading.Lock()

    @property
    def context_length(self) -> int:
        return self._cache.max_length

    def generate(self, prompt_ids: list[int], config: GenerationConfig | None = None, *,
                 on_token: OnToken | None = None, should_stop: ShouldStop | None = None) -> GenerationResult:
        """Generate after `prompt_ids`. `should_stop` is polled between tokens (cooperative cancel)."""
        config = config or GenerationConfig()
        with self._lock:
            common = _common_prefix(self._cached_ids, prompt_ids)
            self._cache.truncate(common)
            self._cached_ids = self._cached_ids[:common]
            try:
                result = generate(self.model, self.tokenizer, prompt_ids, config, self._cache, on_token, should_stop)
            except BaseException:
                self._cache.truncate(0)
                self._cached_ids = []
                raise
            self._cached_ids = (list(prompt_ids) + result.token_ids)[: self._cache.length]
            result.timings["reused_prompt_tokens"] = common
            return result

    def generate_text(self, prompt: str, config: GenerationConfig | None = None, **kwargs) -> GenerationResult:
        """Generate after a text prompt whose control-token spellings (`<|fim_prefix|>` ...) are parsed."""
        return self.generate(self.tokenizer.encode(prompt, parse_special=True), config, **kwargs)


def load_model(spec: str | os.PathLike, *, dtype: torch.dtype | None = None, threads: int | None = None,
               max_context: int | None = None, fetch: bool = True, progress: bool = True) -> LanguageModel:
    """Load a model by known name ("default", "qwen2.5-coder-1.5b"), .gguf path or HF directory.

    `dtype` is the activation dtype; by default bf16 for bf16 checkpoints (their memory-mapped
    weights are used in place, so a 30B-A3B loads in its file's size) and fp32 otherwise.
    """
    if threads:
        torch.set_num_threads(threads)
    path = Path(spec)
    if not path.exists():
        from .model_store import resolve_model

        path = resolve_model(str(spec), fetch=fetch, progress=progress)
    checkpoint = open_checkpoint(path)
    tokenizer = checkpoint.load_tokenizer()
    model = build_model(checkpoint, dtype or _default_dtype(checkpoint))
    return LanguageModel(model, tokenizer, path, max_context)


def _default_dtype(checkpoint) -> torch.dtype:
    embed = checkpoint.tensor("token_embd.weight")
    return torch.bfloat16 if embed.data.dtype == torch.bfloat16 else torch.float32


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
