"""Group-32 asymmetric int4 weights on torch's `_weight_int4pack_mm_for_cpu`.

Q4_K maps exactly: each 32-value sub-block has ``value = scale * code - min`` with code in [0, 15];
the kernel computes ``(code - 8) * scale + zero``, so ``zero = 8 * scale - min``. Scales and zeros
are stored in the activation dtype (fp32: lossless; bf16: rounded to bf16).
"""

from __future__ import annotations

import torch
from gguf import GGMLQuantizationType as QT

from ..linear import LinearKernel

GROUP = 32
_INNER_K_TILES = 2


def pack_int4(codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, dtype: torch.dtype):
    """(packed weight, scales-and-zeros [K/32, N, 2]) from uint8 codes [N, K] and per-32 scales/mins [N, K/32]."""
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), _INNER_K_TILES)
    zeros = scales * 8 - mins
    scales_and_zeros = torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous().to(dtype)
    return packed, scales_and_zeros


class Int4PackedLinear(LinearKernel):
    """y = x @ W.T with W as packed int4 codes and per-32 (scale, zero) pairs.

    `raw` (the file's Q4_K rows) serves embedding lookups: only the looked-up rows are read.
    """

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, act_dtype: torch.dtype,
                 raw: torch.Tensor):
        self.out_features, self.in_features = codes.shape
        self.act_dtype, self.raw = act_dtype, raw
        self.packed, self.scales_and_zeros = pack_int4(codes, scales, mins, act_dtype)

    @classmethod
    def supports(cls, out_features: int, in_features: int) -> bool:
        return in_features % (GROUP * _INNER_K_TILES * 8) == 0 and out_features % 16 == 0

    def __call__(self, x):
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(self.act_dtype), self.packed, GROUP, self.scales_and_zeros)
        return y.to(x.dtype)

    def rows(self, ids):
        from ..quants import dequantize

        return dequantize(self.raw[ids], QT.Q4_K)

    @property
    def nbytes(self):
        return self.packed.numel() * self.packed.element_size() + (
            self.scales_and_zeros.numel() * self.scales_and_zeros.element_size()
        )
