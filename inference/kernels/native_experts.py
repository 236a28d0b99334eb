"""One MoE layer's experts on the native kernels: a decode step is one native call for all selected experts."""

from __future__ import annotations

import torch

from .native_ggml import NativeBlockLinear


class NativeExperts:
    """The layer's (gate, up, down) `NativeBlockLinear`s, each still the file's blocks in place."""

    def __init__(self, gates: list[NativeBlockLinear], ups: list[NativeBlockLinear], downs: list[NativeBlockLinear]):
        self.ops = gates[0].ops
        self.gates, self.ups, self.downs = [g.raw for g in gates], [u.raw for u in ups], [d.raw for d in downs]
        self.types = (gates[0].qtype_id, ups[0].qtype_id, downs[0].qtype_id)

    @classmethod
    def from_kernels(cls, gates, ups, downs) -> "NativeExperts | None":
        """None unless every expert is native and each projection has one quant type across experts."""
        for kernels in (gates, ups, downs):
            if not all(type(k) is NativeBlockLinear for k in kernels) or len({k.qtype_id for k in kernels}) != 1:
                return None
        return cls(gates, ups, downs)

    def decode(self, x: torch.Tensor, experts: list[int], weights: list[float]) -> torch.Tensor:
        """sum_e weight_e * down_e(silu(gate_e(x)) * up_e(x)) for one token x [1, hidden]."""
        y = self.ops.expert_mlp(x.float(), [self.gates[e] for e in experts], [self.ups[e] for e in experts],
                                [self.downs[e] for e in experts], [float(w) for w in weights], *self.types)
        return y.to(x.dtype)
