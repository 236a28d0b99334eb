"""All decoder layers of a few-token pass in one native call (native/decoder_stack.cpp).

Decoding spends a few milliseconds a token in Python and in dispatching a dozen small ops per layer
(~3.5 of the 0.5B model's ~26 ms). Where every layer is plain attention and a gated MLP on the native
kernels' int8 path, `NativeDecoderStack` runs the layers' ops in one native call, in the same order,
so a pass computes exactly what the Python layers compute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .kernels.native_ggml import NativeBlockLinear, NativeGroup
from .kv_cache import KVCache

if TYPE_CHECKING:
    from .model import DecoderLayer


class NativeDecoderStack:
    """The layers' weights, laid out once for `decoder_stack`; call it on passes of up to `max_tokens`."""

    def __init__(self, ops, layers: list[DecoderLayer], max_tokens: int):
        self.ops, self.max_tokens = ops, max_tokens
        first = layers[0].mixer
        self.rope, self.heads, self.kv_heads, self.scale = first.rope, first.num_heads, first.num_kv_heads, first.scale
        self.slots = [layer.mixer.slot for layer in layers]
        self.tensors: list[torch.Tensor | None] = []
        self.qtypes: list[int] = []
        self.eps: list[float] = []
        for layer in layers:
            attention, mlp = layer.mixer, layer.ffn
            q, k, v = attention.qkv.kernels
            gate, up = mlp.gate_up.kernels
            head_norms = (attention.q_norm, attention.k_norm)
            self.tensors += [layer.attn_norm.weight, q.raw, k.raw, v.raw, attention.q_bias, attention.k_bias,
                             attention.v_bias, *(norm.weight if norm is not None else None for norm in head_norms),
                             attention.o_proj.raw, layer.ffn_norm.weight, gate.raw, up.raw, mlp.down.raw]
            self.qtypes += [kernel.qtype_id for kernel in (q, k, v, attention.o_proj, gate, up, mlp.down)]
            self.eps += [layer.attn_norm.eps, layer.ffn_norm.eps,
                         attention.q_norm.eps if attention.q_norm is not None else 0.0]

    def __call__(self, x: torch.Tensor, cache: KVCache, start: int) -> torch.Tensor:
        cos, sin = self.rope.tables(start + x.shape[0])
        keys = [cache.keys[slot] for slot in self.slots]
        values = [cache.values[slot] for slot in self.slots]
        return self.ops.decoder_stack(x, self.tensors, self.qtypes, self.eps, keys, values, cos, sin, start,
                                      self.heads, self.kv_heads, self.scale)


def native_decoder_stack(layers: list[DecoderLayer], dtype: torch.dtype, row_by_row_tokens: int) -> NativeDecoderStack | None:
    """The native stack where it computes what the layers do: fp32, and every layer plain attention
    (native, no output gate) and a gated MLP, all on native GGML-block kernels. Callers pass it a
    `KVCache` (not a recurrent model's cache)."""
    from .model import Attention, GatedMLP

    if dtype != torch.float32 or not layers:
        return None
    limits = [row_by_row_tokens]
    for layer in layers:
        attention, mlp = layer.mixer, layer.ffn
        if not (isinstance(attention, Attention) and isinstance(mlp, GatedMLP) and attention.native is not None
                and mlp.native is not None and layer.attn_norm.native is not None
                and layer.ffn_norm.native is not None and not attention.output_gate
                and attention.rope is layers[0].mixer.rope and isinstance(attention.qkv, NativeGroup)
                and isinstance(mlp.gate_up, NativeGroup) and type(attention.o_proj) is NativeBlockLinear
                and type(mlp.down) is NativeBlockLinear):
            return None
        limits += [attention.qkv.few_tokens, mlp.gate_up.few_tokens, attention.o_proj.few_tokens, mlp.down.few_tokens]
    return NativeDecoderStack(layers[0].mixer.qkv.ops, layers, min(limits))
