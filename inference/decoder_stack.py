"""All decoder layers of a few-token pass in one native call (native/decoder_stack.cpp).

Decoding spends a few milliseconds a token in Python and in dispatching a dozen small ops per layer
(~3.5 of the 0.5B model's ~26 ms). Where every layer is plain attention and a gated MLP on the native
kernels' int8 path (or routed experts on `NativeExperts`, for one-token passes), `NativeDecoderStack`
runs the layers' ops in one native call, in the same order, so a pass computes exactly what the Python
layers compute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .kernels.native_experts import NativeExperts
from .kernels.native_ggml import NativeBlockLinear, NativeGroup
from .kv_cache import KVCache

if TYPE_CHECKING:
    from .model import DecoderLayer, GatedMLP, MixtureOfExperts


class NativeDecoderStack:
    """The layers' weights, laid out once for `decoder_stack`; call it on passes of up to `max_tokens`.

    Per layer, in decoder_stack.cpp's order (`LayerTensor`, `LayerQtype`, `LayerRouting`, `LayerEps`):
    15 tensors (None where a model has none), 8 qtypes, 2 routing numbers and 3 norm epsilons."""

    def __init__(self, ops, layers: list[DecoderLayer], max_tokens: int):
        self.ops, self.max_tokens = ops, max_tokens
        first = layers[0].mixer
        self.rope, self.heads, self.kv_heads, self.scale = first.rope, first.num_heads, first.num_kv_heads, first.scale
        self.slots = [layer.mixer.slot for layer in layers]
        self.tensors: list[torch.Tensor | None] = []
        self.qtypes: list[int] = []
        self.routing: list[int] = []
        self.eps: list[float] = []
        for layer in layers:
            attention = layer.mixer
            q, k, v = attention.qkv.kernels
            head_norms = (attention.q_norm, attention.k_norm)
            self.tensors += [layer.attn_norm.weight, q.raw, k.raw, v.raw, attention.q_bias, attention.k_bias,
                             attention.v_bias, *(norm.weight if norm is not None else None for norm in head_norms),
                             attention.o_proj.raw, layer.ffn_norm.weight]
            self.qtypes += [kernel.qtype_id for kernel in (q, k, v, attention.o_proj)]
            self._add_ffn(layer.ffn)
            self.eps += [layer.attn_norm.eps, layer.ffn_norm.eps,
                         attention.q_norm.eps if attention.q_norm is not None else 0.0]

    def _add_ffn(self, ffn: GatedMLP | MixtureOfExperts) -> None:
        from .model import GatedMLP

        if isinstance(ffn, GatedMLP):
            gate, up = ffn.gate_up.kernels
            self.tensors += [gate.raw, up.raw, ffn.down.raw, None]
            self.qtypes += [gate.qtype_id, up.qtype_id, ffn.down.qtype_id, 0]
            self.routing += [0, 0]
            return
        experts = ffn.stack
        self.tensors += [experts.gates, experts.ups, experts.downs, experts.router]
        self.qtypes += [*experts.types, experts.router_type]
        self.routing += [ffn.top_k, int(ffn.norm_topk_prob)]

    def __call__(self, x: torch.Tensor, cache: KVCache, start: int) -> torch.Tensor:
        cos, sin = self.rope.tables(start + x.shape[0])
        keys = [cache.keys[slot] for slot in self.slots]
        values = [cache.values[slot] for slot in self.slots]
        return self.ops.decoder_stack(x, self.tensors, self.qtypes, self.routing, self.eps, keys, values, cos, sin,
                                      start, self.heads, self.kv_heads, self.scale)


def native_decoder_stack(layers: list[DecoderLayer], dtype: torch.dtype,
                         row_by_row_tokens: int) -> NativeDecoderStack | None:
    """The native stack where it computes what the layers do: fp32, and every layer plain attention
    (native, no output gate) and either a gated MLP or routed experts without a shared one
    (`NativeExperts`, one token a pass), all on native GGML-block kernels. Callers pass it a `KVCache`
    (not a recurrent model's cache)."""
    from .model import Attention

    if dtype != torch.float32 or not layers:
        return None
    limits = [row_by_row_tokens]
    for layer in layers:
        attention = layer.mixer
        if not (isinstance(attention, Attention) and attention.native is not None and not attention.output_gate
                and layer.attn_norm.native is not None and layer.ffn_norm.native is not None
                and attention.rope is layers[0].mixer.rope and isinstance(attention.qkv, NativeGroup)
                and type(attention.o_proj) is NativeBlockLinear):
            return None
        ffn_limit = _ffn_tokens(layer.ffn)
        if ffn_limit == 0:
            return None
        limits += [attention.qkv.few_tokens, attention.o_proj.few_tokens, ffn_limit]
    return NativeDecoderStack(layers[0].mixer.qkv.ops, layers, min(limits))


def _ffn_tokens(ffn) -> int:
    """Most tokens a pass may hold for the stack to run this FFN as its layer does (0: it cannot)."""
    from .model import GatedMLP, MixtureOfExperts

    if isinstance(ffn, GatedMLP):
        if ffn.native is None or not isinstance(ffn.gate_up, NativeGroup) or type(ffn.down) is not NativeBlockLinear:
            return 0
        return min(ffn.gate_up.few_tokens, ffn.down.few_tokens)
    if isinstance(ffn, MixtureOfExperts) and isinstance(ffn.stack, NativeExperts) and ffn.shared is None:
        return 1  # MixtureOfExperts takes moe_decode for one token only
    return 0
