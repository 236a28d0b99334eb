"""The Qwen decoder (qwen2, qwen3, qwen3_moe) as plain tensor code over `LinearKernel`s.

One sequence at a time: activations are [tokens, hidden]. The forward pass appends to a
`KVCache` and returns logits for the new tokens (or only the last one, for prefill).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .checkpoint import Checkpoint
from .config import ModelConfig
from .kernels.expert_stack import ExpertStack
from .kernels.native_experts import NativeExperts
from .kernels.native_ggml import native_group
from .kv_cache import KVCache
from .linear import KernelFactory, LinearKernel, make_embedding, make_linear
from .rope import RotaryEmbedding


class RMSNorm:
    def __init__(self, weight: torch.Tensor, eps: float, dtype: torch.dtype):
        self.weight = weight.to(dtype)
        self.eps = eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class Attention:
    """Grouped-query attention with optional q/k/v bias (qwen2) and per-head q/k RMSNorm (qwen3)."""

    def __init__(self, config: ModelConfig, q, k, v, o, biases, q_norm, k_norm, rope: RotaryEmbedding):
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = q, k, v, o
        self.qkv = native_group([q, k, v])
        self.q_bias, self.k_bias, self.v_bias = biases
        self.q_norm, self.k_norm = q_norm, k_norm
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.scale = 1.0 / math.sqrt(config.head_dim)
        self.rope = rope

    def _heads(self, y: torch.Tensor, bias, heads: int) -> torch.Tensor:
        if bias is not None:
            y = y + bias
        return y.view(y.shape[0], heads, self.head_dim)

    def __call__(self, x: torch.Tensor, cache: KVCache, layer: int, start: int) -> torch.Tensor:
        n = x.shape[0]
        if self.qkv is not None:
            q, k, v = self.qkv(x)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = self._heads(q, self.q_bias, self.num_heads)
        k = self._heads(k, self.k_bias, self.num_kv_heads)
        v = self._heads(v, self.v_bias, self.num_kv_heads)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = self.rope(q.transpose(0, 1), start)
        k = self.rope(k.transpose(0, 1), start)
        keys, values = cache.write(layer, start, k, v.transpose(0, 1))
        mask = None
        if n > 1:
            # Query i sits at position start+i and sees keys 0..start+i.
            mask = torch.ones(n, start + n, dtype=torch.bool).tril(diagonal=start)
        out = F.scaled_dot_product_attention(
            q.unsqueeze(0), keys.unsqueeze(0), values.unsqueeze(0),
            attn_mask=mask, scale=self.scale, enable_gqa=self.num_heads != self.num_kv_heads,
        )
        return self.o_proj(out[0].transpose(0, 1).reshape(n, self.num_heads * self.head_dim))


class GatedMLP:
    """down(silu(gate(x)) * up(x))."""

    def __init__(self, gate: LinearKernel, up: LinearKernel, down: LinearKernel):
        self.gate, self.up, self.down = gate, up, down
        self.gate_up = native_group([gate, up])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x) if self.gate_up is not None else (self.gate(x), self.up(x))
        return self.down(F.silu(gate) * up)


class MixtureOfExperts:
    """Qwen3-MoE routing: fp32 softmax over experts, top-k, optional renormalisation.

    Only the selected experts' weights are read. Several tokens are grouped by expert, so each
    expert's weights are read once per pass. With an `ExpertStack` (dense experts) a decode step
    takes two matmuls per selected expert; with `NativeExperts` one native call in all.
    """

    def __init__(self, router: LinearKernel, experts: list[GatedMLP], top_k: int, norm_topk_prob: bool,
                 stack: ExpertStack | NativeExperts | None = None):
        self.router, self.experts, self.stack = router, experts, stack
        self.top_k, self.norm_topk_prob = top_k, norm_topk_prob

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.router(x).float(), dim=-1)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights.to(x.dtype)
        if x.shape[0] == 1 and self.stack is not None:
            return self.stack.decode(x, chosen[0].tolist(), weights[0].tolist())
        if x.shape[0] == 1:
            out = torch.zeros_like(x)
            for weight, expert in zip(weights[0], chosen[0].tolist()):
                out += weight * self.experts[expert](x)
            return out
        out = torch.zeros_like(x)
        flat_experts = chosen.reshape(-1)
        order = torch.argsort(flat_experts, stable=True)
        counts = torch.bincount(flat_experts, minlength=len(self.experts)).tolist()
        token_of = order // self.top_k
        weight_of = weights.reshape(-1)[order]
        offset = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            tokens = token_of[offset : offset + count]
            y = self.experts[expert](x[tokens]) * weight_of[offset : offset + count, None]
            out.index_add_(0, tokens, y)
            offset += count
        return out


@dataclass
class DecoderLayer:
    attn_norm: RMSNorm
    attention: Attention
    ffn_norm: RMSNorm
    ffn: GatedMLP | MixtureOfExperts

    def __call__(self, x, cache: KVCache, layer: int, start: int):
        x = x + self.attention(self.attn_norm(x), cache, layer, start)
        return x + self.ffn(self.ffn_norm(x))


class QwenModel:
    def __init__(self, config: ModelConfig, embed: LinearKernel, layers: list[DecoderLayer],
                 final_norm: RMSNorm, lm_head: LinearKernel, dtype: torch.dtype):
        self.config, self.embed, self.layers = config, embed, layers
        self.final_norm, self.lm_head, self.dtype = final_norm, lm_head, dtype

    def new_cache(self, max_length: int | None = None) -> KVCache:
        c = self.config
        return KVCache(c.num_layers, c.num_kv_heads, c.head_dim, max_length or c.context_length, self.dtype)

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, cache: KVCache, last_only: bool = False) -> torch.Tensor:
        """Run `tokens` (1-D ids) after the cache's contents; return fp32 logits [n or 1, vocab]."""
        start = cache.length
        cache.reserve(start + tokens.shape[0])
        x = self.embed.rows(tokens)
        for index, layer in enumerate(self.layers):
            x = layer(x, cache, index, start)
        cache.length = start + tokens.shape[0]
        if last_only:
            x = x[-1:]
        return self.lm_head(self.final_norm(x)).float()

    @property
    def decode_weight_bytes(self) -> int:
        """Weight bytes one decoded token reads: every matrix except the embedding table (one row of it,
        unless tied to the output), and of each MoE layer only the router and `top_k` experts."""
        total = self.lm_head.nbytes
        for layer in self.layers:
            a, ffn = layer.attention, layer.ffn
            total += sum(k.nbytes for k in (a.q_proj, a.k_proj, a.v_proj, a.o_proj))
            if isinstance(ffn, MixtureOfExperts):
                expert_bytes = sum(m.gate.nbytes + m.up.nbytes + m.down.nbytes for m in ffn.experts)
                total += ffn.router.nbytes + expert_bytes * ffn.top_k // len(ffn.experts)
            else:
                total += ffn.gate.nbytes + ffn.up.nbytes + ffn.down.nbytes
        return total


def build_model(checkpoint: Checkpoint, dtype: torch.dtype = torch.float32,
                kernels: list[KernelFactory] | None = None) -> QwenModel:
    """Assemble the model from a checkpoint's tensors (weights stay where the checkpoint keeps them)."""
    config = checkpoint.config

    def linear(name: str) -> LinearKernel:
        return make_linear(checkpoint.tensor(name), dtype, kernels)

    def vector(name: str) -> torch.Tensor | None:
        return checkpoint.tensor(name).data.to(dtype) if checkpoint.has(name) else None

    def norm(name: str) -> RMSNorm:
        return RMSNorm(checkpoint.tensor(name).data, config.rms_norm_eps, dtype)

    rope = RotaryEmbedding(config.head_dim, config.rope_theta)
    layers = []
    for i in range(config.num_layers):
        p = f"blk.{i}."
        attention = Attention(
            config,
            linear(p + "attn_q.weight"), linear(p + "attn_k.weight"),
            linear(p + "attn_v.weight"), linear(p + "attn_output.weight"),
            (vector(p + "attn_q.bias"), vector(p + "attn_k.bias"), vector(p + "attn_v.bias")),
            norm(p + "attn_q_norm.weight") if config.qk_norm else None,
            norm(p + "attn_k_norm.weight") if config.qk_norm else None,
            rope,
        )
        if config.is_moe_layer(i):
            projections = {
                name: [make_linear(t, dtype, kernels) for t in checkpoint.expert_tensors(i, name)]
                for name in ("gate", "up", "down")
            }
            gates, ups, downs = (projections[name] for name in ("gate", "up", "down"))
            stack = ExpertStack.from_kernels(gates, ups, downs)
            if stack is not None:
                experts = [GatedMLP(*stack.expert_kernels(e)) for e in range(config.num_experts)]
            else:
                experts = [GatedMLP(*parts) for parts in zip(gates, ups, downs)]
                stack = NativeExperts.from_kernels(gates, ups, downs)
            del projections, gates, ups, downs
            ffn = MixtureOfExperts(
                linear(p + "ffn_gate_inp.weight"), experts, config.num_experts_per_token, config.norm_topk_prob, stack
            )
        else:
            ffn = GatedMLP(linear(p + "ffn_gate.weight"), linear(p + "ffn_up.weight"), linear(p + "ffn_down.weight"))
        layers.append(DecoderLayer(norm(p + "attn_norm.weight"), attention, norm(p + "ffn_norm.weight"), ffn))
    tied = config.tie_word_embeddings or not checkpoint.has("output.weight")
    if tied:
        embed = lm_head = linear("token_embd.weight")
    else:
        embed, lm_head = make_embedding(checkpoint.tensor("token_embd.weight"), dtype), linear("output.weight")
    return QwenModel(config, embed, layers, norm("output_norm.weight"), lm_head, dtype)
