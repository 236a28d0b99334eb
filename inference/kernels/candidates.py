"""Every way to hold a GGML block-quantized weight, built from the file's blocks.

A candidate builds a kernel from a `CheckpointTensor` or returns None where it does not apply
(type, shape or CPU). `exact` candidates reproduce the file's weight values (up to the float format
of their scales or copy); the others re-round them to one int8 scale per row. The native kernel
counts as exact: its weights are the file's blocks, and only its few-token calls round the
activations to int8 per block (as llama.cpp does), which the real-model accuracy test bounds
(greedy agreement and perplexity against the fp32 reference).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from gguf import GGMLQuantizationType as QT

from ..checkpoint import CheckpointTensor
from ..linear import LinearKernel
from ..quants import dequantize, q4_k_scales_mins
from .cpu_features import cpu_features
from .dequantized import DequantizedLinear
from .int4_packed import Int4PackedLinear
from .int8_packed import Int8DynamicLinear, Int8WeightOnlyLinear
from .native_build import native_ops
from .native_ggml import TILED_TYPES, NativeBlockLinear


@dataclass(frozen=True)
class Candidate:
    name: str
    exact: bool
    build: Callable[[CheckpointTensor], "LinearKernel | None"]


def _int4(act_dtype: torch.dtype):
    def build(tensor: CheckpointTensor):
        if tensor.qtype != QT.Q4_K or not Int4PackedLinear.supports(*tensor.shape):
            return None
        scales, mins, codes = q4_k_scales_mins(tensor.data)
        return Int4PackedLinear(codes, scales, mins, act_dtype, tensor.data)

    return build


# Rows dequantized at once into a dense copy (bounds the fp32 scratch to ~8 MiB).
_TILE_ELEMENTS = 2 * 2**20


def dequantize_tiled(tensor: CheckpointTensor, dtype: torch.dtype) -> torch.Tensor:
    """The whole weight as a dense `dtype` matrix, decoded a row tile at a time."""
    out_features, in_features = tensor.shape
    out = torch.empty(out_features, in_features, dtype=dtype)
    step = max(1, _TILE_ELEMENTS // in_features)
    for start in range(0, out_features, step):
        out[start : start + step] = dequantize(tensor.data[start : start + step], tensor.qtype, dtype)
    return out


def _dense(dtype: torch.dtype):
    def build(tensor: CheckpointTensor):
        return DequantizedLinear(dequantize_tiled(tensor, dtype), cpu_features().native_bf16_matmul)

    return build


def _int8_weight_only(act_dtype: torch.dtype):
    def build(tensor: CheckpointTensor):
        return Int8WeightOnlyLinear(dequantize(tensor.data, tensor.qtype), act_dtype)

    return build


def _int8_dynamic(tensor: CheckpointTensor):
    if not Int8DynamicLinear.available():
        return None
    return Int8DynamicLinear(dequantize(tensor.data, tensor.qtype))


def _native(tensor: CheckpointTensor):
    ops = native_ops()
    if ops is None:
        return None
    from .selection import few_token_limit  # selection imports the candidates

    bf16_tiles = cpu_features().native_bf16_matmul and os.environ.get("QWEN_LSP_BF16_TILES") != "0"
    # Tiled where the vectorized tiles apply: the same bytes and values, verification passes of several
    # tokens up to 1.6x faster (one-token calls about as fast: memory-bound).
    tiled = tensor.qtype in TILED_TYPES and ops.tiles_vectorized()
    return NativeBlockLinear(ops, tensor.data, tensor.qtype, *tensor.shape,
                             few_tokens=few_token_limit(ops, bf16_tiles), bf16_tiles=bf16_tiles, tiled=tiled)


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("native-ggml", True, _native),
    Candidate("int4-fp32", True, _int4(torch.float32)),
    Candidate("int4-bf16", True, _int4(torch.bfloat16)),
    Candidate("dense-bf16", True, _dense(torch.bfloat16)),
    Candidate("int8-dynamic", False, _int8_dynamic),
    Candidate("int8-fp32", False, _int8_weight_only(torch.float32)),
    Candidate("int8-bf16", False, _int8_weight_only(torch.bfloat16)),
)
