"""One MoE layer's routed experts on the native kernels: a decode step (router, softmax, top-k and
every chosen expert) is one native call."""

from __future__ import annotations

import torch

from ..linear import DenseLinear, LinearKernel
from .native_ggml import NativeBlockLinear


class NativeExperts:
    """The router and the experts' (gate, up, down) blocks, each projection one strided view over the
    file's stacked expert tensor (the blocks stay in place)."""

    def __init__(self, router: torch.Tensor, router_type: int, gates: torch.Tensor, ups: torch.Tensor,
                 downs: torch.Tensor, types: tuple[int, int, int], ops):
        self.router, self.router_type = router, router_type
        self.gates, self.ups, self.downs, self.types, self.ops = gates, ups, downs, types, ops

    @classmethod
    def from_kernels(cls, router: LinearKernel, gates: list[LinearKernel], ups: list[LinearKernel],
                     downs: list[LinearKernel]) -> "NativeExperts | None":
        """None unless every expert is native, each projection has one quant type and sits evenly
        spaced in memory (as a GGUF stores experts), and the router is native or a float32 matrix."""
        stacks = []
        for kernels in (gates, ups, downs):
            if not all(type(k) is NativeBlockLinear for k in kernels) or len({k.qtype_id for k in kernels}) != 1:
                return None
            stacked = _evenly_spaced([k.raw for k in kernels])
            if stacked is None:
                return None
            stacks.append(stacked)
        if type(router) is NativeBlockLinear:
            weight, router_type = router.raw, router.qtype_id
        elif type(router) is DenseLinear and router.weight.dtype == torch.float32:
            weight, router_type = router.weight, -1
        else:
            return None
        return cls(weight, router_type, *stacks, (gates[0].qtype_id, ups[0].qtype_id, downs[0].qtype_id),
                   gates[0].ops)

    def decode(self, x: torch.Tensor, top_k: int, normalize: bool) -> torch.Tensor:
        """The routed experts' weighted sum for one token x [1, hidden]."""
        y = self.ops.moe_decode(x.float(), self.router, self.router_type, self.gates, self.ups, self.downs, top_k,
                                normalize, *self.types)
        return y.to(x.dtype)


def _evenly_spaced(raws: list[torch.Tensor]) -> torch.Tensor | None:
    """[experts, rows, row_bytes]: one strided view over same-shaped views a constant step apart in one storage."""
    first = raws[0]
    step = raws[1].data_ptr() - first.data_ptr() if len(raws) > 1 else 0
    for index, raw in enumerate(raws):
        if (raw.shape != first.shape or raw.stride() != first.stride() or raw.stride(-1) != 1
                or raw.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()
                or raw.data_ptr() != first.data_ptr() + index * step):
            return None
    return first.as_strided((len(raws), *first.shape), (step, *first.stride()), first.storage_offset())
