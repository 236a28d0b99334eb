"""The matrix-kernel interface: every weight matrix is a `LinearKernel`; `make_linear` picks one.

A kernel owns its weight's storage and computes `x @ W.T`. Faster kernels (repacked int4/int8,
per-CPU choices) plug in by registering before the generic ones in `KERNELS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch

from .checkpoint import CheckpointTensor

# Dequantized scratch per step of a block-quantized matmul, in elements (fp32: 8 MiB).
_DEQUANT_TILE_ELEMENTS = 2 * 2**20


class LinearKernel(ABC):
    """y = x @ W.T for one [out_features, in_features] weight."""

    out_features: int
    in_features: int
    # True where the kernel computes from the checkpoint's own data (whose file pages must then stay mapped).
    reads_checkpoint_in_place: bool = False

    @abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: [tokens, in_features] in the compute dtype -> [tokens, out_features]."""

    def greedy_logits(self, x: torch.Tensor) -> torch.Tensor:
        """As an output head for argmax-only callers: each row's largest entry exact (and at the same
        index); a kernel may leave rows that cannot be largest at -inf. Default: the full product."""
        return self(x)

    @abstractmethod
    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` of W in the compute dtype (embedding lookup)."""

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Bytes of weight storage this kernel reads per full matmul."""

    @property
    def greedy_bytes(self) -> int:
        """Bytes `greedy_logits` reads per call."""
        return self.nbytes


class DenseLinear(LinearKernel):
    """A plain float matrix used with `torch.nn.functional.linear`."""

    def __init__(self, weight: torch.Tensor, compute_dtype: torch.dtype):
        # Same dtype: the (possibly memory-mapped) tensor is used as is; otherwise one converted copy.
        self.weight = weight if weight.dtype == compute_dtype else weight.to(compute_dtype)
        self.out_features, self.in_features = self.weight.shape

    def __call__(self, x):
        return torch.nn.functional.linear(x, self.weight)

    def rows(self, ids):
        return self.weight[ids]

    @property
    def nbytes(self):
        return self.weight.numel() * self.weight.element_size()


class BlockQuantLinear(LinearKernel):
    """GGML block-quantized weight kept as stored; dequantized tile by tile inside each matmul."""

    def __init__(self, raw: torch.Tensor, qtype, out_features: int, in_features: int, compute_dtype: torch.dtype):
        self.raw = raw
        self.qtype = qtype
        self.out_features, self.in_features = out_features, in_features
        self.compute_dtype = compute_dtype
        self.tile_rows = max(1, _DEQUANT_TILE_ELEMENTS // in_features)

    def __call__(self, x):
        from .quants import dequantize

        out = torch.empty(*x.shape[:-1], self.out_features, dtype=x.dtype)
        for start in range(0, self.out_features, self.tile_rows):
            stop = min(start + self.tile_rows, self.out_features)
            tile = dequantize(self.raw[start:stop], self.qtype, self.compute_dtype)
            torch.matmul(x, tile.t(), out=out[..., start:stop])
        return out

    def rows(self, ids):
        from .quants import dequantize

        return dequantize(self.raw[ids], self.qtype, self.compute_dtype)

    @property
    def nbytes(self):
        return self.raw.numel()


KernelFactory = Callable[[CheckpointTensor, torch.dtype], "LinearKernel | None"]


def _dense(tensor: CheckpointTensor, compute_dtype: torch.dtype) -> LinearKernel | None:
    return None if tensor.is_quantized else DenseLinear(tensor.data, compute_dtype)


def _block_quant(tensor: CheckpointTensor, compute_dtype: torch.dtype) -> LinearKernel | None:
    if not tensor.is_quantized:
        return None
    out_features, in_features = tensor.shape
    return BlockQuantLinear(tensor.data, tensor.qtype, out_features, in_features, compute_dtype)


def _fastest_quant(tensor: CheckpointTensor, compute_dtype: torch.dtype) -> LinearKernel | None:
    if not tensor.is_quantized or compute_dtype != torch.float32:
        return None
    from .kernels.selection import choose_kernel

    return choose_kernel(tensor)


# Tried in order; the first factory that returns a kernel wins.
KERNELS: list[KernelFactory] = [_dense, _fastest_quant, _block_quant]
# The file's exact values in the compute dtype: the reference the fast kernels are checked against.
REFERENCE_KERNELS: list[KernelFactory] = [_dense, _block_quant]


def make_embedding(tensor: CheckpointTensor, compute_dtype: torch.dtype) -> LinearKernel:
    """A table only looked up by rows: kept as stored, rows decoded on demand."""
    return _dense(tensor, compute_dtype) or _block_quant(tensor, compute_dtype)


def make_linear(tensor: CheckpointTensor, compute_dtype: torch.dtype,
                kernels: list[KernelFactory] | None = None) -> LinearKernel:
    """The kernel for one weight matrix (the first of `kernels`, default `KERNELS`, that applies)."""
    for factory in kernels or KERNELS:
        kernel = factory(tensor, compute_dtype)
        if kernel is not None:
            return kernel
    raise ValueError(f"no kernel for tensor {tensor.name} ({tensor.qtype})")
