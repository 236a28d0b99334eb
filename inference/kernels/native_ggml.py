"""GGML blocks used in place, straight from the file's pages, by the native kernels (native_build).

The weight stays the file's only copy. Calls with few tokens (decode, draft checks) quantize the
activations per block to int8 and use integer dot products, as llama.cpp does (weights exact,
activations rounded); calls with many tokens (prefill) dequantize row tiles to fp32 for BLAS,
exactly, or on CPUs that multiply bf16 in hardware (AMX, AVX-512 BF16) to bf16 for oneDNN, several
times faster there (weights, activations and products rounded to bf16, as the dense-bf16 kernel does;
`QWEN_LSP_BF16_TILES=0` keeps fp32).
"""

from __future__ import annotations

import torch
from gguf import GGMLQuantizationType

from ..linear import LinearKernel
from ..quants import block_geometry

# Most tokens per call that take the int8 dot-product path unless measured otherwise for this CPU
# (`selection.few_token_limit`); more go through dequantized tiles.
FEW_TOKENS = 8
# Weight rows dequantized per BLAS call, in elements (fp32: 8 MiB).
_TILE_ELEMENTS = 2 * 2**20


# GGML types the native kernels also hold tiled (native/tiled_blocks.cpp), and the tiled layout's type id.
TILED_TYPES = {GGMLQuantizationType.Q5_0: 106, GGMLQuantizationType.Q4_K: 112, GGMLQuantizationType.Q6_K: 114}


class NativeBlockLinear(LinearKernel):
    """y = x @ W.T for a GGML block-quantized `raw` [out_features, row_bytes]: the file's view, or with
    `tiled` (a type in TILED_TYPES) a repacked copy of the same bytes whose few-token calls take a third
    of the instructions (the file's pages are then released: one resident copy)."""

    reads_checkpoint_in_place = True

    def __init__(self, ops, raw: torch.Tensor, qtype, out_features: int, in_features: int,
                 few_tokens: int = FEW_TOKENS, bf16_tiles: bool = False, tiled: bool = False):
        block_geometry(qtype)
        self.ops, self.qtype_id = ops, int(qtype)
        self.raw = raw.reshape(out_features, -1)
        if tiled:
            self.raw = ops.tile_pack(self.raw, self.qtype_id, in_features)
            self.qtype_id, self.reads_checkpoint_in_place = TILED_TYPES[qtype], False
        self.out_features, self.in_features = out_features, in_features
        self.tile_rows = max(1, _TILE_ELEMENTS // in_features)
        self.few_tokens = few_tokens  # most rows per call on the int8 path
        self.bf16_tiles = bf16_tiles  # many-token calls on bf16 tiles

    def __call__(self, x):
        rows = x.reshape(-1, self.in_features).float()
        y = self.int8_matmul(rows) if rows.shape[0] <= self.few_tokens else self.tiled_matmul(rows)
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def int8_matmul(self, rows: torch.Tensor) -> torch.Tensor:
        """Activations rounded to int8 per block, integer dot products: each row on its own."""
        return self.ops.quantized_matmul(rows, self.raw, self.qtype_id)

    def tiled_matmul(self, rows: torch.Tensor) -> torch.Tensor:
        """Row tiles of the weight dequantized to fp32 (exact) or bf16, then BLAS."""
        return self.ops.dequantized_matmul(rows, self.raw, self.qtype_id, self.tile_rows, self.bf16_tiles)

    def rows(self, ids):
        return self.ops.dequantize_rows(self.raw, ids, self.qtype_id)

    @property
    def nbytes(self):
        return self.raw.numel()


class NativeGroup:
    """Native kernels sharing one input (q/k/v, gate/up): their few-token calls run as one native
    call, one pass of the threads instead of one per matrix."""

    def __init__(self, kernels: list[NativeBlockLinear]):
        self.kernels = kernels
        self.ops = kernels[0].ops
        self.raws, self.qtypes = [k.raw for k in kernels], [k.qtype_id for k in kernels]
        self.few_tokens = min(k.few_tokens for k in kernels)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        rows = x.reshape(-1, self.kernels[0].in_features)
        if rows.shape[0] > self.few_tokens:
            return [kernel(x) for kernel in self.kernels]
        ys = self.ops.quantized_matmuls(rows.float(), self.raws, self.qtypes)
        return [y.to(x.dtype).view(*x.shape[:-1], y.shape[-1]) for y in ys]


def native_group(kernels: list[LinearKernel]) -> NativeGroup | None:
    """A `NativeGroup` of `kernels` where they are all native, else None."""
    if len(kernels) > 1 and all(type(k) is NativeBlockLinear for k in kernels):
        return NativeGroup(kernels)
    return None
