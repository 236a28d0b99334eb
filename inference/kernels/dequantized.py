"""Weights dequantized once into a dense bf16 or fp32 copy: exact up to the storage float's rounding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..linear import LinearKernel

# Rows converted to fp32 at once when a bf16 weight meets a many-token batch (fp32: 8 MiB).
_TILE_ELEMENTS = 2 * 2**20


class DequantizedLinear(LinearKernel):
    """A dense copy in `weight.dtype`.

    One-token calls run in the weight's dtype (fewest bytes). Many-token calls on a bf16 copy either
    run in bf16 (`bf16_batches`, for CPUs with bf16 dot products) or convert row tiles to fp32 first,
    which is faster where bf16 matmul is emulated.
    """

    def __init__(self, weight: torch.Tensor, bf16_batches: bool):
        self.weight = weight.contiguous()
        self.out_features, self.in_features = weight.shape
        self.bf16_batches = bf16_batches
        self.tile_rows = max(1, _TILE_ELEMENTS // self.in_features)

    def __call__(self, x):
        w = self.weight
        if w.dtype == x.dtype:
            return F.linear(x, w)
        if x.shape[0] == 1 or self.bf16_batches:
            return F.linear(x.to(w.dtype), w).to(x.dtype)
        out = torch.empty(x.shape[0], self.out_features, dtype=x.dtype)
        for start in range(0, self.out_features, self.tile_rows):
            stop = min(start + self.tile_rows, self.out_features)
            torch.matmul(x, w[start:stop].to(x.dtype).t(), out=out[:, start:stop])
        return out

    def rows(self, ids):
        return self.weight[ids].float()

    @property
    def nbytes(self):
        return self.weight.numel() * self.weight.element_size()
