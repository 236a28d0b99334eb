"""One MoE layer's experts in two stacked dense tensors, for decode with few calls per expert.

``gate_up[e]`` holds expert e's gate rows then its up rows; ``down[e]`` its down matrix. The
per-expert kernels become views into the stacks, so the weights stay resident once. A decode
step indexes the selected experts (views, no gathered copies) and runs two matmuls per expert.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dequantized import DequantizedLinear


class ExpertStack:
    def __init__(self, gate_up: torch.Tensor, down: torch.Tensor, bf16_batches: bool):
        self.gate_up, self.down = gate_up, down
        self.width = down.shape[-1]
        self.bf16_batches = bf16_batches

    @classmethod
    def from_kernels(cls, gates, ups, downs) -> "ExpertStack | None":
        """Stack dense expert kernels of one dtype; None when any expert uses another kernel."""
        kernels = [*gates, *ups, *downs]
        if not all(type(k) is DequantizedLinear for k in kernels) or len({k.weight.dtype for k in kernels}) != 1:
            return None
        gate_up = torch.stack([torch.cat([g.weight, u.weight]) for g, u in zip(gates, ups)])
        down = torch.stack([d.weight for d in downs])
        return cls(gate_up, down, kernels[0].bf16_batches)

    def expert_kernels(self, expert: int) -> tuple[DequantizedLinear, DequantizedLinear, DequantizedLinear]:
        """(gate, up, down) of one expert as views into the stacks."""
        gate_up = self.gate_up[expert]
        return (DequantizedLinear(gate_up[: self.width], self.bf16_batches),
                DequantizedLinear(gate_up[self.width :], self.bf16_batches),
                DequantizedLinear(self.down[expert], self.bf16_batches))

    def decode(self, x: torch.Tensor, experts: list[int], weights: list[float]) -> torch.Tensor:
        """sum_e weight_e * down_e(silu(gate_e(x)) * up_e(x)) for one token x [1, hidden]."""
        xs = x.to(self.gate_up.dtype)
        out = torch.zeros_like(x)
        for expert, weight in zip(experts, weights):
            gate_up = F.linear(xs, self.gate_up[expert])
            hidden = F.silu(gate_up[:, : self.width]).mul_(gate_up[:, self.width :])
            out.add_(F.linear(hidden, self.down[expert]), alpha=weight)
        return out
