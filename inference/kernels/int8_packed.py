"""Per-output-channel int8 weights: weight-only (`_weight_int8pack_mm`) or with dynamically
quantized activations (fbgemm/oneDNN via `torch.ops.quantized.linear_dynamic`).

Block scales differ within a row, so mapping GGML blocks to one scale per row re-rounds the
values: ``requantize_per_channel`` picks the scale from the row's largest magnitude.
"""

from __future__ import annotations

import warnings

import torch

from ..linear import LinearKernel


def requantize_per_channel(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes [N, K] and fp32 scales [N] with ``values ~= codes * scales[:, None]``."""
    scales = values.abs().amax(dim=1).clamp_min(1e-12) / 127
    codes = torch.round(values / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return codes, scales


class Int8WeightOnlyLinear(LinearKernel):
    """int8 weights, float activations: `_weight_int8pack_mm`."""

    def __init__(self, values: torch.Tensor, act_dtype: torch.dtype):
        self.out_features, self.in_features = values.shape
        self.act_dtype = act_dtype
        self.codes, scales = requantize_per_channel(values)
        self.scales = scales.to(act_dtype)

    def __call__(self, x):
        return torch.ops.aten._weight_int8pack_mm(x.to(self.act_dtype), self.codes, self.scales).to(x.dtype)

    def rows(self, ids):
        return self.codes[ids].float() * self.scales[ids, None].float()

    @property
    def nbytes(self):
        return self.codes.numel() + self.scales.numel() * self.scales.element_size()


class Int8DynamicLinear(LinearKernel):
    """int8 weights and int8 activations quantized per call (x86 fbgemm/oneDNN quantized engine)."""

    def __init__(self, values: torch.Tensor):
        self.out_features, self.in_features = values.shape
        codes, scales = requantize_per_channel(values)
        self.scales = scales
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # quantized tensor creation is flagged as deprecated
            qweight = torch._make_per_channel_quantized_tensor(
                codes, scales.double(), torch.zeros(self.out_features, dtype=torch.long), 0
            )
            self.packed = torch.ops.quantized.linear_prepack(qweight, None)

    @staticmethod
    def available() -> bool:
        return any(engine in torch.backends.quantized.supported_engines for engine in ("x86", "fbgemm", "onednn"))

    def __call__(self, x):
        return torch.ops.quantized.linear_dynamic(x.float(), self.packed, True).to(x.dtype)

    def rows(self, ids):
        qweight = torch.ops.quantized.linear_unpack(self.packed)[0]
        return qweight.int_repr()[ids].float() * self.scales[ids, None]

    @property
    def nbytes(self):
        return self.out_features * self.in_features + self.scales.numel() * 4
