"""Hybrid check: a scaled-down Qwen3-Coder-Next-shaped random model (qwen3_next) against a
Qwen3-MoE with the same hidden size, layers and experts, both Q8_0 through the same kernels.

Kept from Qwen3-Coder-Next: three Gated DeltaNet layers per full-attention layer, value heads 2x key
heads, gated attention with a quarter of each head rotary, routed experts plus a shared expert of
one expert's width. Scaled down: hidden 2048 -> 512, 48 layers -> 8, 512 experts top-10 -> 64 top-8,
head widths 256/128 -> 128/64, vocab 151,936 -> 16,384. The Qwen3-MoE twin routes top-9 (its
ninth expert stands for the shared one); both models' bytes read per token are reported. The
hybrid carries an MTP head, as Qwen3-Coder-Next does; the cost of one draft step with it is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from gguf import GGMLQuantizationType as QT

from inference.checkpoint import CheckpointTensor
from inference.config import ModelConfig
from inference.model import build_model

from .moe_decode import RandomCheckpoint, decode_ms_per_token

HIDDEN, LAYERS, VOCAB, EXPERTS, TOP_K, EXPERT_WIDTH = 512, 8, 16384, 64, 8, 128
KEY_HEADS, VALUE_HEADS, LINEAR_HEAD_DIM, CONV = 4, 8, 64, 4


def hybrid_config() -> ModelConfig:
    return ModelConfig(
        architecture="qwen3_next", vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=0, num_layers=LAYERS,
        num_heads=4, num_kv_heads=1, head_dim=128, rms_norm_eps=1e-6, rope_theta=1e7, context_length=4096,
        qk_norm=True, num_experts=EXPERTS, num_experts_per_token=TOP_K, moe_intermediate_size=EXPERT_WIDTH,
        shared_expert_intermediate_size=EXPERT_WIDTH,
        layer_types=tuple("full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(LAYERS)),
        attention_output_gate=True, rotary_dim=32, linear_conv_kernel=CONV, linear_num_key_heads=KEY_HEADS,
        linear_num_value_heads=VALUE_HEADS, linear_key_head_dim=LINEAR_HEAD_DIM,
        linear_value_head_dim=LINEAR_HEAD_DIM, mtp_layers=1, name="scaled qwen3-coder-next",
    )


def moe_twin_config() -> ModelConfig:
    return ModelConfig(
        architecture="qwen3_moe", vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=0, num_layers=LAYERS,
        num_heads=4, num_kv_heads=1, head_dim=128, rms_norm_eps=1e-6, rope_theta=1e7, context_length=4096,
        qk_norm=True, num_experts=EXPERTS, num_experts_per_token=TOP_K + 1, moe_intermediate_size=EXPERT_WIDTH,
        name="qwen3_moe twin",
    )


@dataclass
class HybridRandomCheckpoint(RandomCheckpoint):
    """`RandomCheckpoint` plus qwen3_next's tensors: Q8_0 projections, fp32 small ones."""

    def tensor(self, name: str) -> CheckpointTensor:
        c = self.config
        key_width, value_width = KEY_HEADS * LINEAR_HEAD_DIM, VALUE_HEADS * LINEAR_HEAD_DIM
        small = {
            "ssm_conv1d": lambda: torch.randn(2 * key_width + value_width, CONV) * 0.3,
            "ssm_a": lambda: -torch.rand(VALUE_HEADS) * 4, "ssm_dt": lambda: torch.ones(VALUE_HEADS),
            "ssm_norm": lambda: torch.ones(LINEAR_HEAD_DIM),
        }
        kind = name.split(".")[2] if name.startswith("blk.") else ""
        if kind == "nextn":
            kind = ".".join(name.split(".")[2:4])
        if kind in small:
            data = small[kind]()
            return CheckpointTensor(name, tuple(data.shape), data)
        matrices = {
            "attn_q": (2 * c.num_heads * c.head_dim, c.hidden_size),
            "attn_qkv": (2 * key_width + value_width, c.hidden_size), "attn_gate": (value_width, c.hidden_size),
            "ssm_ba": (2 * VALUE_HEADS, c.hidden_size), "ssm_out": (c.hidden_size, value_width),
            "ffn_gate_inp_shexp": (1, c.hidden_size),
            "ffn_gate_shexp": (EXPERT_WIDTH, c.hidden_size), "ffn_up_shexp": (EXPERT_WIDTH, c.hidden_size),
            "ffn_down_shexp": (c.hidden_size, EXPERT_WIDTH),
            "nextn.eh_proj": (c.hidden_size, 2 * c.hidden_size),  # the MTP head's input projection
        }
        if kind in matrices:
            shape = matrices[kind]
            if shape[0] == 1:  # one row: kept dense, as llama.cpp keeps it
                return CheckpointTensor(name, shape, torch.randn(shape) * 0.05)
            return CheckpointTensor(name, shape, self._q8_0(shape), QT.Q8_0)
        return super().tensor(name)


def prefill_tokens_per_s(model, tokens: int) -> float:
    cache = model.new_cache(tokens + 16)
    started = time.perf_counter()
    model.forward(torch.arange(tokens) % VOCAB, cache, last_only=True)
    return tokens / (time.perf_counter() - started)


def mtp_draft_ms_per_step(model, steps: int) -> float:
    """Mean ms of one draft step of the MTP head (one token, after a short context)."""
    head = model.mtp
    cache = head.new_cache(steps + 16, model.dtype)
    states = torch.randn(16, HIDDEN) * 0.1
    out, logits = head.forward(states, torch.arange(16), cache)
    out, token = out[-1:], logits[-1].argmax().reshape(1)
    started = time.perf_counter()
    for _ in range(steps):
        out, logits = head.forward(out, token, cache)
        token = logits[-1].argmax().reshape(1)
    return (time.perf_counter() - started) * 1000 / steps


def hybrid_vs_moe(threads: int, tokens: int = 48, prompt: int = 512, rounds: int = 3) -> dict:
    """Decode ms/token and prefill tokens/s of both models, alternated `rounds` times (medians)."""
    torch.set_num_threads(threads)
    hybrid = build_model(HybridRandomCheckpoint(hybrid_config()))
    twin = build_model(RandomCheckpoint(moe_twin_config()))
    runs = {"hybrid": ([], []), "moe": ([], [])}
    draft_ms = []
    for _ in range(rounds):
        draft_ms.append(mtp_draft_ms_per_step(hybrid, tokens))
        for key, model in (("hybrid", hybrid), ("moe", twin)):
            runs[key][0].append(decode_ms_per_token(model, tokens))
            runs[key][1].append(prefill_tokens_per_s(model, prompt))
    median = {key: [sorted(values)[rounds // 2] for values in pair] for key, pair in runs.items()}
    return dict(
        hybrid_ms_per_token=median["hybrid"][0], moe_ms_per_token=median["moe"][0],
        hybrid_prefill_tok_s=median["hybrid"][1], moe_prefill_tok_s=median["moe"][1],
        mtp_draft_ms_per_step=sorted(draft_ms)[rounds // 2],
        hybrid_active_bytes=hybrid.decode_weight_bytes, moe_active_bytes=twin.decode_weight_bytes,
        description=f"{LAYERS} layers (6 Gated DeltaNet + 2 gated attention vs 8 attention), hidden {HIDDEN}, "
                    f"{EXPERTS} experts x {EXPERT_WIDTH}, Q8_0, prefill {prompt} tokens, {threads} threads",
    )
