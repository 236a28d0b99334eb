"""MoE decode check: a scaled-down Qwen3-Coder-30B-A3B-shaped random model against a dense model
with the same active parameter count, both Q8_0 through the same kernels.

Kept from the 30B-A3B: 128 experts, top-8, q/kv heads 8:1, q width 2x hidden, expert width 3/8 of
hidden. Scaled down: hidden 2048 -> 512, 48 layers -> 8, vocab 151,936 -> 16,384. The dense twin's
FFN width is top_k x expert width, so both read the same active weights per token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as QT
from gguf import quants

from inference.checkpoint import CheckpointTensor
from inference.config import ModelConfig
from inference.model import build_model

HIDDEN, LAYERS, VOCAB = 512, 8, 16384
EXPERTS, TOP_K, EXPERT_WIDTH = 128, 8, 192
HEADS, KV_HEADS, HEAD_DIM = 8, 1, 128


def moe_config() -> ModelConfig:
    return ModelConfig(
        architecture="qwen3_moe", vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=0, num_layers=LAYERS,
        num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM, rms_norm_eps=1e-6, rope_theta=1e6,
        context_length=4096, qk_norm=True, num_experts=EXPERTS, num_experts_per_token=TOP_K,
        moe_intermediate_size=EXPERT_WIDTH, norm_topk_prob=True, name="scaled qwen3-coder-30b-a3b",
    )


def dense_config() -> ModelConfig:
    return ModelConfig(
        architecture="qwen3", vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=TOP_K * EXPERT_WIDTH,
        num_layers=LAYERS, num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM, rms_norm_eps=1e-6,
        rope_theta=1e6, context_length=4096, qk_norm=True, name="dense twin",
    )


@dataclass
class RandomCheckpoint:
    """Random Q8_0 matrices (fp32 norms) in GGUF naming for `config`, made on demand."""

    config: ModelConfig
    seed: int = 0
    path: Path = Path("<random>")

    def has(self, name: str) -> bool:
        """No biases and no separate output matrix (the embedding is tied)."""
        return not name.endswith(".bias") and name != "output.weight"

    def tensor(self, name: str) -> CheckpointTensor:
        c = self.config
        if name.endswith("norm.weight"):
            width = c.head_dim if ("attn_q_norm" in name or "attn_k_norm" in name) else c.hidden_size
            return CheckpointTensor(name, (width,), torch.ones(width))
        shape = self._shape(name)
        return CheckpointTensor(name, shape, self._q8_0(shape), QT.Q8_0)

    def expert_tensors(self, layer: int, projection: str) -> list[CheckpointTensor]:
        out_features, in_features = self._shape(f"ffn_{projection}_exps")
        experts = self.config.num_experts
        stacked = self._q8_0((experts, out_features, in_features))
        return [CheckpointTensor(f"blk.{layer}.ffn_{projection}_exps[{e}]", (out_features, in_features), stacked[e],
                                 QT.Q8_0) for e in range(experts)]

    def _shape(self, name: str) -> tuple[int, int]:
        c = self.config
        q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        shapes = {
            "token_embd": (c.vocab_size, c.hidden_size), "attn_q": (q, c.hidden_size), "attn_k": (kv, c.hidden_size),
            "attn_v": (kv, c.hidden_size), "attn_output": (c.hidden_size, q),
            "ffn_gate_inp": (c.num_experts, c.hidden_size),
            "ffn_gate_exps": (c.moe_intermediate_size, c.hidden_size),
            "ffn_up_exps": (c.moe_intermediate_size, c.hidden_size),
            "ffn_down_exps": (c.hidden_size, c.moe_intermediate_size),
            "ffn_gate": (c.intermediate_size, c.hidden_size), "ffn_up": (c.intermediate_size, c.hidden_size),
            "ffn_down": (c.hidden_size, c.intermediate_size),
        }
        return shapes[name.split(".")[-2] if name.startswith("blk.") else name.split(".")[0]]

    def _q8_0(self, shape: tuple[int, ...]) -> torch.Tensor:
        self.seed += 1
        values = np.random.default_rng(self.seed).standard_normal(shape, dtype=np.float32) * 0.05
        return torch.from_numpy(quants.quantize(values, QT.Q8_0))


def decode_ms_per_token(model, tokens: int) -> float:
    """Mean ms per one-token forward after a short prompt."""
    cache = model.new_cache(tokens + 16)
    model.forward(torch.arange(16), cache, last_only=True)
    token = torch.tensor([1])
    started = time.perf_counter()
    for _ in range(tokens):
        token = model.forward(token, cache, last_only=True)[-1].argmax().reshape(1)
    return (time.perf_counter() - started) * 1000 / tokens


def moe_vs_dense(threads: int, tokens: int = 48, rounds: int = 3) -> dict:
    """Decode ms/token of both models, alternated `rounds` times (medians), and their ratio."""
    torch.set_num_threads(threads)
    moe = build_model(RandomCheckpoint(moe_config()))
    dense = build_model(RandomCheckpoint(dense_config()))
    moe_ms, dense_ms = [], []
    for _ in range(rounds):
        moe_ms.append(decode_ms_per_token(moe, tokens))
        dense_ms.append(decode_ms_per_token(dense, tokens))
    moe_median, dense_median = sorted(moe_ms)[rounds // 2], sorted(dense_ms)[rounds // 2]
    return dict(
        moe_ms_per_token=moe_median, dense_ms_per_token=dense_median, ratio=moe_median / dense_median,
        moe_active_bytes=moe.decode_weight_bytes, dense_bytes=dense.decode_weight_bytes,
        description=f"{LAYERS} layers, hidden {HIDDEN}, {EXPERTS} experts top-{TOP_K} x {EXPERT_WIDTH} vs dense "
                    f"FFN {TOP_K * EXPERT_WIDTH}, Q8_0, {threads} threads",
    )
