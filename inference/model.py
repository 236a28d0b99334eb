"""The Qwen decoder (qwen2, qwen3, qwen3_moe, qwen3_next) as plain tensor code over `LinearKernel`s.

One sequence at a time: activations are [tokens, hidden]. The forward pass appends to a
`KVCache` (a `HybridCache` when some layers are Gated DeltaNet linear attention) and returns
logits for the new tokens (or only the last one, for prefill).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from .checkpoint import Checkpoint
from .config import ModelConfig
from .decoder_stack import native_decoder_stack
from .gated_deltanet import GatedDeltaNet
from .hybrid_cache import HybridCache
from .kernels.expert_stack import ExpertStack
from .kernels.native_experts import NativeExperts
from .kernels.native_build import native_ops
from .kernels.native_ggml import native_group
from .kv_cache import KVCache
from .linear import KernelFactory, LinearKernel, make_embedding, make_linear
from .mtp import MultiTokenPredictor
from .rope import RotaryEmbedding

OnHidden = Callable[[int, torch.Tensor], None]

# Passes of at most this many tokens (decode, verifying drafts, short prompt remainders) attend query
# by query; with the native kernels' row-independent int8 path (`selection.few_token_limit`) each
# token then computes what it would alone.
ROW_BY_ROW_TOKENS = 32


class RMSNorm:
    def __init__(self, weight: torch.Tensor, eps: float, dtype: torch.dtype):
        self.weight = weight.to(dtype)
        self.eps = eps
        self.native = native_ops() if dtype == torch.float32 else None  # one call instead of seven ops

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.native is not None and x.dtype == torch.float32:
            return self.native.rms_norm(x, self.weight, self.eps)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class Attention:
    """Grouped-query attention with optional q/k/v bias (qwen2), per-head q/k RMSNorm (qwen3) and
    an output gate (qwen3_next: q_proj yields each head's query then its gate; the output is
    multiplied by sigmoid(gate)). `slot` indexes its keys/values in the cache."""

    def __init__(self, config: ModelConfig, slot: int, q, k, v, o, biases, q_norm, k_norm, rope: RotaryEmbedding):
        self.slot = slot
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = q, k, v, o
        self.qkv = native_group([q, k, v])
        self.q_bias, self.k_bias, self.v_bias = biases
        self.q_norm, self.k_norm = q_norm, k_norm
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.output_gate = config.attention_output_gate
        self.scale = 1.0 / math.sqrt(config.head_dim)
        self.rope = rope
        # One native call per few-token pass (`few_token_attention`) where the kernels are built.
        self.native = native_ops() if not (self.output_gate and self.q_bias is not None) else None
        # Where the projections' many-token calls already round to bf16 (tiles on bf16 hardware), so does
        # the attention of those passes (2.7x faster there; fp32 sums inside).
        self.bf16_prefill = getattr(q, "bf16_tiles", False)

    @property
    def weight_bytes(self) -> int:
        return sum(k.nbytes for k in (self.q_proj, self.k_proj, self.v_proj, self.o_proj))

    def _attend(self, q, keys, values, mask=None) -> torch.Tensor:
        if q.shape[1] == 1 and mask is None and q.dtype == torch.float32:  # bf16 scores would lose SDPA's fp32 sums
            return self._attend_one(q, keys, values)
        bf16 = self.bf16_prefill and q.dtype == torch.float32 and q.shape[1] > ROW_BY_ROW_TOKENS
        dtype = torch.bfloat16 if bf16 else q.dtype
        return F.scaled_dot_product_attention(
            q.unsqueeze(0).to(dtype), keys.unsqueeze(0).to(dtype), values.unsqueeze(0).to(dtype),
            attn_mask=mask, scale=self.scale, enable_gqa=self.num_heads != self.num_kv_heads,
        )[0].to(q.dtype)

    def _attend_one(self, q, keys, values) -> torch.Tensor:
        """One query against all keys in two batched matmuls (half SDPA's time at this size): head h
        reads kv head h // group, as SDPA's enable_gqa does."""
        grouped = q.reshape(self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim)
        keys, values = keys.to(q.dtype), values.to(q.dtype)
        scores = torch.bmm(grouped, keys.transpose(1, 2)) * self.scale
        return torch.bmm(torch.softmax(scores, dim=-1), values).reshape(self.num_heads, 1, self.head_dim)

    def _native_pass(self, q, k, v, cache: KVCache, start: int) -> torch.Tensor:
        """The few-token pass in one native call: what the tensor code below computes for n <=
        ROW_BY_ROW_TOKENS (bias, norms, rotation, cache write, query-by-query attention)."""
        n, gate = q.shape[0], None
        q = q.view(n, self.num_heads, -1)
        if self.output_gate:
            q, gate = q.chunk(2, dim=-1)
        cos, sin = self.rope.tables(start + n)
        keys, values = cache.layer_storage(self.slot)
        norms = (self.q_norm.weight, self.k_norm.weight) if self.q_norm is not None else (None, None)
        out = self.native.few_token_attention(
            q, k.view(n, self.num_kv_heads, -1), v.view(n, self.num_kv_heads, -1), self.q_bias, self.k_bias,
            self.v_bias, *norms, self.q_norm.eps if self.q_norm is not None else 0.0, cos, sin, keys, values, start,
            self.scale,
        )
        if gate is not None:
            out = out * torch.sigmoid(gate.reshape(n, -1))
        return self.o_proj(out)

    def _heads(self, y: torch.Tensor, bias, heads: int, width: int | None = None) -> torch.Tensor:
        if bias is not None:
            y = y + bias
        return y.view(y.shape[0], heads, width or self.head_dim)

    def __call__(self, x: torch.Tensor, cache: KVCache, start: int) -> torch.Tensor:
        n = x.shape[0]
        if self.qkv is not None:
            q, k, v = self.qkv(x)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.native is not None and n <= ROW_BY_ROW_TOKENS and x.dtype == torch.float32:
            return self._native_pass(q, k, v, cache, start)
        gate = None
        if self.output_gate:
            q, gate = self._heads(q, self.q_bias, self.num_heads, 2 * self.head_dim).chunk(2, dim=-1)
        else:
            q = self._heads(q, self.q_bias, self.num_heads)
        k = self._heads(k, self.k_bias, self.num_kv_heads)
        v = self._heads(v, self.v_bias, self.num_kv_heads)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = self.rope(q.transpose(0, 1), start)
        k = self.rope(k.transpose(0, 1), start)
        keys, values = cache.write(self.slot, start, k, v.transpose(0, 1))
        if n <= ROW_BY_ROW_TOKENS:
            # Query i sits at position start+i and sees keys 0..start+i: attended alone, exactly as
            # decoding that token would, so a verified draft gives the tokens plain decoding gives.
            out = torch.cat([self._attend(q[:, i : i + 1], keys[:, : start + i + 1], values[:, : start + i + 1])
                             for i in range(n)], dim=1)
        else:
            mask = torch.ones(n, start + n, dtype=torch.bool).tril(diagonal=start)
            out = self._attend(q, keys, values, mask)
        out = out.transpose(0, 1).reshape(n, self.num_heads * self.head_dim)
        if gate is not None:
            out = out * torch.sigmoid(gate.reshape(n, -1))
        return self.o_proj(out)


class GatedMLP:
    """down(silu(gate(x)) * up(x))."""

    def __init__(self, gate: LinearKernel, up: LinearKernel, down: LinearKernel):
        self.gate, self.up, self.down = gate, up, down
        self.gate_up = native_group([gate, up])
        self.native = native_ops()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x) if self.gate_up is not None else (self.gate(x), self.up(x))
        if self.native is not None and gate.dtype == torch.float32:
            return self.down(self.native.silu_mul_(gate.contiguous(), up))
        return self.down(F.silu(gate) * up)

    @property
    def weight_bytes(self) -> int:
        return self.gate.nbytes + self.up.nbytes + self.down.nbytes


class SharedExpert:
    """qwen3_next's expert every token goes through, scaled by sigmoid(gate . x)."""

    def __init__(self, mlp: GatedMLP, gate: LinearKernel):
        self.mlp, self.gate = mlp, gate

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(x)) * self.mlp(x)

    @property
    def weight_bytes(self) -> int:
        return self.mlp.weight_bytes + self.gate.nbytes


class MixtureOfExperts:
    """Qwen3-MoE routing: fp32 softmax over experts, top-k, optional renormalisation, plus an
    optional shared expert (qwen3_next).

    Only the selected experts' weights are read. Several tokens are grouped by expert, so each
    expert's weights are read once per pass. With an `ExpertStack` (dense experts) a decode step
    takes two matmuls per selected expert; with `NativeExperts` one native call routes and runs them all.
    """

    def __init__(self, router: LinearKernel, experts: list[GatedMLP], top_k: int, norm_topk_prob: bool,
                 stack: ExpertStack | NativeExperts | None = None, shared: SharedExpert | None = None):
        self.router, self.experts, self.stack, self.shared = router, experts, stack, shared
        self.top_k, self.norm_topk_prob = top_k, norm_topk_prob

    @property
    def decode_weight_bytes(self) -> int:
        """The router, `top_k` experts' share of all experts, and the shared expert."""
        expert_bytes = sum(m.weight_bytes for m in self.experts)
        shared = self.shared.weight_bytes if self.shared is not None else 0
        return self.router.nbytes + expert_bytes * self.top_k // len(self.experts) + shared

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        routed = self._routed(x)
        return routed if self.shared is None else routed + self.shared(x)

    def _routed(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1 and isinstance(self.stack, NativeExperts):
            return self.stack.decode(x, self.top_k, self.norm_topk_prob)
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
    mixer: Attention | GatedDeltaNet
    ffn_norm: RMSNorm
    ffn: GatedMLP | MixtureOfExperts

    def __call__(self, x, cache: KVCache, start: int):
        x = x + self.mixer(self.attn_norm(x), cache, start)
        return x + self.ffn(self.ffn_norm(x))


class QwenModel:
    def __init__(self, config: ModelConfig, embed: LinearKernel, layers: list[DecoderLayer],
                 final_norm: RMSNorm, lm_head: LinearKernel, dtype: torch.dtype,
                 mtp: MultiTokenPredictor | None = None, kv_dtype: torch.dtype | None = None):
        self.config, self.embed, self.layers = config, embed, layers
        self.final_norm, self.lm_head, self.dtype = final_norm, lm_head, dtype
        self.kv_dtype = kv_dtype or dtype  # the caches' element type
        self.mtp = mtp  # qwen3_next's multi-token-prediction head, where the checkpoint has one
        # Few-token passes through all layers in one native call, where that computes the same.
        self.decoder_stack = None if config.is_recurrent else native_decoder_stack(layers, dtype, ROW_BY_ROW_TOKENS)

    def new_cache(self, max_length: int | None = None) -> KVCache:
        c = self.config
        max_length = max_length or c.context_length
        if c.is_recurrent:
            linear = sum(c.is_linear_attention_layer(i) for i in range(c.num_layers))
            return HybridCache(c.num_layers - linear, linear, c.num_kv_heads, c.head_dim, max_length, self.kv_dtype)
        return KVCache(c.num_layers, c.num_kv_heads, c.head_dim, max_length, self.kv_dtype)

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, cache: KVCache, last_only: bool = False,
                on_hidden: OnHidden | None = None, greedy: bool = False) -> torch.Tensor:
        """Run `tokens` (1-D ids) after the cache's contents; return fp32 logits [n or 1, vocab].
        `on_hidden(start, states)` receives the final (normed) hidden states of every new token.
        With `greedy` (argmax-only callers) each row's largest logit is exact and others may be -inf
        (`LinearKernel.greedy_logits`)."""
        head = self.lm_head.greedy_logits if greedy else self.lm_head
        start = cache.length
        cache.reserve(start + tokens.shape[0])
        x = self.embed.rows(tokens)
        if self.decoder_stack is not None and tokens.shape[0] <= self.decoder_stack.max_tokens:
            x = self.decoder_stack(x, cache, start)
        else:
            for layer in self.layers:
                x = layer(x, cache, start)
        cache.length = start + tokens.shape[0]
        if on_hidden is not None:
            x = self.final_norm(x)
            on_hidden(start, x)
            return head(x[-1:] if last_only else x).float()
        if last_only:
            x = x[-1:]
        return head(self.final_norm(x)).float()

    @property
    def exact_pass_tokens(self) -> int:
        """Most tokens one forward pass may hold and still compute each token as decoding it alone
        does: query-by-query attention (`ROW_BY_ROW_TOKENS`) and the native kernels' int8 path
        (`few_tokens`; more rows take dequantized tiles). Speculative verification stays within it."""
        kernels = [self.lm_head]
        for layer in self.layers:
            kernels += [*vars(layer.mixer).values(), *vars(layer.ffn).values()]
        return min([ROW_BY_ROW_TOKENS, *(getattr(k, "few_tokens", ROW_BY_ROW_TOKENS) for k in kernels)])

    @property
    def decode_weight_bytes(self) -> int:
        """Weight bytes one greedily decoded token reads: every matrix except the embedding table (one row
        of it, unless tied to the output), of each MoE layer only the router and `top_k` experts, and of
        the output head what its greedy step reads."""
        total = self.lm_head.greedy_bytes
        for layer in self.layers:
            ffn = layer.ffn
            total += layer.mixer.weight_bytes
            total += ffn.decode_weight_bytes if isinstance(ffn, MixtureOfExperts) else ffn.weight_bytes
        return total


def build_model(checkpoint: Checkpoint, dtype: torch.dtype = torch.float32,
                kernels: list[KernelFactory] | None = None) -> QwenModel:
    """Assemble the model from a checkpoint's tensors (weights stay where the checkpoint keeps them)."""
    config = checkpoint.config
    build = _LayerBuilder(checkpoint, dtype, kernels)
    layers = []
    attention_slots = linear_slots = 0
    for i in range(config.num_layers):
        linear_attention = config.is_linear_attention_layer(i)
        slot = linear_slots if linear_attention else attention_slots
        layers.append(build.layer(i, slot, linear_attention, config.is_moe_layer(i)))
        linear_slots += linear_attention
        attention_slots += not linear_attention
    tied = config.tie_word_embeddings or not checkpoint.has("output.weight")
    if tied:
        embed = lm_head = build.linear("token_embd.weight")
    else:
        embed, lm_head = make_embedding(checkpoint.tensor("token_embd.weight"), dtype), build.linear("output.weight")
    mtp = None
    p = f"blk.{config.num_layers}."
    if config.mtp_layers and checkpoint.has(p + "nextn.eh_proj.weight"):
        mtp = MultiTokenPredictor(
            build.linear(p + "nextn.eh_proj.weight"), build.norm(p + "nextn.enorm.weight"),
            build.norm(p + "nextn.hnorm.weight"),
            build.layer(config.num_layers, 0, False, checkpoint.has(p + "ffn_gate_inp.weight")),
            build.norm(p + "nextn.shared_head_norm.weight"), embed, lm_head, config,
        )
    return QwenModel(config, embed, layers, build.norm("output_norm.weight"), lm_head, dtype, mtp,
                     kv_dtype=_kv_dtype(checkpoint, dtype, kernels))


def _kv_dtype(checkpoint: Checkpoint, dtype: torch.dtype, kernels: list[KernelFactory] | None) -> torch.dtype:
    """fp16 keys and values for block-quantized weights computed in fp32, as llama.cpp keeps them: half
    the cache's memory and of the bytes attention reads per token, an error far below the weights'.
    Exact dtypes elsewhere (float checkpoints, the reference kernels that check the fast ones)."""
    quantized = checkpoint.tensor("token_embd.weight").is_quantized
    return torch.float16 if dtype == torch.float32 and quantized and kernels is None else dtype


class _LayerBuilder:
    """Kernels, norms and decoder layers from a checkpoint's canonical tensor names."""

    def __init__(self, checkpoint: Checkpoint, dtype: torch.dtype, kernels: list[KernelFactory] | None):
        self.checkpoint, self.config, self.dtype, self.kernels = checkpoint, checkpoint.config, dtype, kernels
        config = self.config
        self.rope = RotaryEmbedding(config.head_dim, config.rope_theta, config.rotary_dim or None)

    def linear(self, name: str) -> LinearKernel:
        tensor = self.checkpoint.tensor(name)
        if len(tensor.shape) == 1:  # a single output row stored as a vector
            tensor = replace(tensor, shape=(1, tensor.shape[0]), data=tensor.data.reshape(1, -1))
        return make_linear(tensor, self.dtype, self.kernels)

    def vector(self, name: str) -> torch.Tensor | None:
        return self.checkpoint.tensor(name).data.to(self.dtype) if self.checkpoint.has(name) else None

    def norm(self, name: str) -> RMSNorm:
        return RMSNorm(self.checkpoint.tensor(name).data, self.config.rms_norm_eps, self.dtype)

    def mlp(self, p: str, suffix: str = "") -> GatedMLP:
        return GatedMLP(*(self.linear(f"{p}ffn_{part}{suffix}.weight") for part in ("gate", "up", "down")))

    def layer(self, i: int, slot: int, linear_attention: bool, moe: bool) -> DecoderLayer:
        """Layer `i`; `slot` indexes its keys/values (or recurrent state) in the cache."""
        config, checkpoint, linear, p = self.config, self.checkpoint, self.linear, f"blk.{i}."
        if linear_attention:
            mixer = GatedDeltaNet(
                config, slot, linear(p + "attn_qkv.weight"), linear(p + "attn_gate.weight"),
                linear(p + "ssm_ba.weight"), checkpoint.tensor(p + "ssm_conv1d.weight").data,
                checkpoint.tensor(p + "ssm_a").data, checkpoint.tensor(p + "ssm_dt.bias").data,
                checkpoint.tensor(p + "ssm_norm.weight").data, linear(p + "ssm_out.weight"), self.dtype,
            )
        else:
            mixer = Attention(
                config, slot,
                linear(p + "attn_q.weight"), linear(p + "attn_k.weight"),
                linear(p + "attn_v.weight"), linear(p + "attn_output.weight"),
                (self.vector(p + "attn_q.bias"), self.vector(p + "attn_k.bias"), self.vector(p + "attn_v.bias")),
                self.norm(p + "attn_q_norm.weight") if config.qk_norm else None,
                self.norm(p + "attn_k_norm.weight") if config.qk_norm else None,
                self.rope,
            )
        ffn = self._moe(i) if moe else self.mlp(p)
        # llama.cpp names qwen3_next's second norm after the attention, the others' before the FFN.
        ffn_norm = p + ("post_attention_norm.weight" if config.architecture == "qwen3_next" else "ffn_norm.weight")
        return DecoderLayer(self.norm(p + "attn_norm.weight"), mixer, self.norm(ffn_norm), ffn)

    def _moe(self, i: int) -> MixtureOfExperts:
        config, p = self.config, f"blk.{i}."
        projections = {
            name: [make_linear(t, self.dtype, self.kernels) for t in self.checkpoint.expert_tensors(i, name)]
            for name in ("gate", "up", "down")
        }
        gates, ups, downs = (projections[name] for name in ("gate", "up", "down"))
        router = self.linear(p + "ffn_gate_inp.weight")
        stack = ExpertStack.from_kernels(gates, ups, downs)
        if stack is not None:
            experts = [GatedMLP(*stack.expert_kernels(e)) for e in range(config.num_experts)]
        else:
            experts = [GatedMLP(*parts) for parts in zip(gates, ups, downs)]
            stack = NativeExperts.from_kernels(router, gates, ups, downs)
        del projections, gates, ups, downs
        shared = None
        if config.shared_expert_intermediate_size:
            shared = SharedExpert(self.mlp(p, "_shexp"), self.linear(p + "ffn_gate_inp_shexp.weight"))
        return MixtureOfExperts(router, experts, config.num_experts_per_token, config.norm_topk_prob, stack, shared)
