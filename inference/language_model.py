"""A loaded model with its tokenizer: the runtime's public object."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from .checkpoint import open_checkpoint
from .engine import Engine, SpeculationConfig
from .generate import GenerationResult, OnToken, ShouldStop
from .kernels.page_release import release_free_heap
from .linear import REFERENCE_KERNELS
from .model import QwenModel, build_model
from .sampling import GenerationConfig
from .tokenizer import Tokenizer


class LanguageModel:
    """A model, its tokenizer and the `Engine` that serves it (thread-safe, with a prefix cache and
    n-gram speculation by default)."""

    def __init__(self, model: QwenModel, tokenizer: Tokenizer, path: Path, max_context: int | None = None, *,
                 prefix_cache_mib: float = 512.0, speculation: SpeculationConfig = SpeculationConfig()):
        self.model, self.tokenizer, self.path = model, tokenizer, path
        self.config = model.config
        self.engine = Engine(model, tokenizer, max_context=max_context, prefix_cache_mib=prefix_cache_mib,
                             speculation=speculation)

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    def generate(self, prompt_ids: list[int], config: GenerationConfig | None = None, *,
                 on_token: OnToken | None = None, should_stop: ShouldStop | None = None,
                 request_key: object = None, time_budget_ms: float | None = None) -> GenerationResult:
        """Generate after `prompt_ids`. `should_stop` is polled between tokens (cooperative cancel);
        a newer request with the same `request_key` preempts this one; past `time_budget_ms`
        generation ends at the next newline."""
        return self.engine.generate(prompt_ids, config, on_token=on_token, should_stop=should_stop,
                                    request_key=request_key, time_budget_ms=time_budget_ms)

    def generate_text(self, prompt: str, config: GenerationConfig | None = None, **kwargs) -> GenerationResult:
        """Generate after a text prompt whose control-token spellings (`<|fim_prefix|>` ...) are parsed."""
        return self.generate(self.tokenizer.encode(prompt, parse_special=True), config, **kwargs)


def load_model(spec: str | os.PathLike, *, dtype: torch.dtype | None = None, threads: int | None = None,
               max_context: int | None = None, fetch: bool = True, progress: bool = True,
               prefix_cache_mib: float = 512.0, draft: str | os.PathLike | None = None,
               speculation: SpeculationConfig = SpeculationConfig(),
               reference_kernels: bool = False) -> LanguageModel:
    """Load a model by known name ("default", "qwen2.5-coder-1.5b"), .gguf path or HF directory.

    `dtype` is the activation dtype; by default bf16 for bf16 checkpoints (their memory-mapped
    weights are used in place, so a 30B-A3B loads in its file's size) and fp32 otherwise.
    `reference_kernels` computes with the file's exact values (slow; for checking the fast kernels).
    `draft` names a smaller model with the same tokenizer that drafts tokens for this one (off by
    default: see the replay bench); otherwise `speculation` (prompt lookup by default) applies.
    """
    if threads:
        torch.set_num_threads(threads)
    path = _resolve(spec, fetch, progress)
    checkpoint = open_checkpoint(path)
    tokenizer = checkpoint.load_tokenizer()
    kernels = REFERENCE_KERNELS if reference_kernels else None
    dtype = dtype or _default_dtype(checkpoint)
    model = build_model(checkpoint, dtype, kernels)
    draft_checkpoint = None
    if draft is not None:
        draft_checkpoint = open_checkpoint(_resolve(draft, fetch, progress))
        if draft_checkpoint.config.vocab_size != model.config.vocab_size:
            raise ValueError(f"the draft model {draft} has another vocabulary than {spec}")
        speculation = replace(speculation, draft_model=build_model(draft_checkpoint, dtype, kernels))
    del checkpoint, draft_checkpoint  # their metadata (vocabulary lists) is no longer needed
    release_free_heap()
    return LanguageModel(model, tokenizer, path, max_context, prefix_cache_mib=prefix_cache_mib,
                         speculation=speculation)


def _resolve(spec: str | os.PathLike, fetch: bool, progress: bool) -> Path:
    path = Path(spec)
    if path.exists():
        return path
    from .model_store import resolve_model

    return resolve_model(str(spec), fetch=fetch, progress=progress)


def _default_dtype(checkpoint) -> torch.dtype:
    embed = checkpoint.tensor("token_embd.weight")
    return torch.bfloat16 if embed.data.dtype == torch.bfloat16 else torch.float32
