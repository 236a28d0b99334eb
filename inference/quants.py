"""Vectorized torch dequantization of GGML blocks, in GGUF's on-disk layout.

Every function takes `raw`, a uint8 tensor ``[..., row_bytes]`` of whole blocks
(any leading dims, possibly a read-only mmap view that is never written), and
works on all of its blocks at once.

The ``*_scales`` / ``*_scales_mins`` helpers expose the unpacked pieces for
integer repacking. They return float32 per-group scales (and mins) of shape
``[..., n_values // group]`` plus the integer codes ``[..., n_values]``:

- symmetric types (Q8_0, Q5_0, Q6_K): int8 codes, ``value = scale * code``
- asymmetric types (Q4_K, Q5_K): uint8 codes, ``value = scale * code - min``

Groups are 32 values, except Q6_K's 16. `dequantize` is built on these helpers.
"""

from __future__ import annotations

import torch
from gguf import GGMLQuantizationType as QT

SUPPORTED_QTYPES = frozenset({QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q5_0, QT.Q5_K, QT.Q4_K, QT.Q6_K})

_BLOCK_GEOMETRY = {
    QT.F32: (1, 4),
    QT.F16: (1, 2),
    QT.BF16: (1, 2),
    QT.Q8_0: (32, 34),
    QT.Q5_0: (32, 22),
    QT.Q4_K: (256, 144),
    QT.Q5_K: (256, 176),
    QT.Q6_K: (256, 210),
}


class UnsupportedQuantError(ValueError):
    """A tensor is stored in a GGML type this runtime cannot dequantize."""

    def __init__(self, qtype):
        self.qtype = qtype
        supported = ", ".join(sorted(t.name for t in SUPPORTED_QTYPES))
        super().__init__(f"unsupported GGML quantization type {_type_name(qtype)} (supported: {supported})")


def _type_name(qtype) -> str:
    try:
        return QT(qtype).name
    except ValueError:
        return f"#{qtype}"


def block_geometry(qtype) -> tuple[int, int]:
    """(values per block, bytes per block) of a supported GGML type."""
    try:
        return _BLOCK_GEOMETRY[QT(qtype)]
    except (KeyError, ValueError):
        raise UnsupportedQuantError(qtype) from None


def row_bytes(qtype, n_values: int) -> int:
    """Bytes taken by one row of `n_values` values; ValueError unless whole blocks."""
    block_values, block_bytes = block_geometry(qtype)
    if n_values % block_values:
        raise ValueError(f"{QT(qtype).name} row of {n_values} values is not a multiple of its {block_values}-value block")
    return n_values // block_values * block_bytes


def dequantize(raw: torch.Tensor, qtype, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decode `raw` (uint8 ``[..., row_bytes]``) into a fresh ``[..., n_values]`` tensor of `out_dtype`."""
    block_geometry(qtype)
    qtype = QT(qtype)
    if qtype in _FLOAT_DTYPES:
        return _as_float(raw, qtype).to(out_dtype, copy=True)
    if qtype in _SYMMETRIC:
        scales, codes = _SYMMETRIC[qtype](raw)
        values = codes.to(torch.float32).unflatten(-1, (scales.shape[-1], -1))
        values.mul_(scales.unsqueeze(-1))
    else:
        scales, mins, codes = _ASYMMETRIC[qtype](raw)
        values = codes.to(torch.float32).unflatten(-1, (scales.shape[-1], -1))
        values.mul_(scales.unsqueeze(-1)).sub_(mins.unsqueeze(-1))
    return values.flatten(-2).to(out_dtype)


def q8_0_scales(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q8_0 (fp16 d, 32 x int8): per-32 scales and int8 codes."""
    blocks = _blocks(raw, QT.Q8_0)
    scales = _fp16_field(blocks, 0)
    codes = blocks[..., 2:].view(torch.int8)
    return scales, codes.flatten(-2)


def q5_0_scales(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q5_0 (fp16 d, 32 high bits, 16 bytes of low nibbles): per-32 scales and int8 codes in [-16, 15]."""
    blocks = _blocks(raw, QT.Q5_0)
    scales = _fp16_field(blocks, 0)
    low = _nibbles(blocks[..., 6:22]).flatten(-2)
    high = _bits(blocks[..., 2:6], 1).flatten(-2)  # bit j of the little-endian uint32 belongs to value j
    codes = low.bitwise_or_(high.bitwise_left_shift_(4)).view(torch.int8).sub_(16)
    return scales, codes.flatten(-2)


def q4_k_scales_mins(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_K super-blocks of 256: per-32 scales ``d*sc``, mins ``dmin*m`` and uint8 codes in [0, 15]."""
    blocks = _blocks(raw, QT.Q4_K)
    scales, mins = _k_scales_mins(blocks)
    codes = _nibbles(blocks[..., 16:144].unflatten(-1, (4, 32)))
    return scales, mins, codes.flatten(-4)


def q5_k_scales_mins(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q5_K super-blocks of 256: per-32 scales ``d*sc``, mins ``dmin*m`` and uint8 codes in [0, 31]."""
    blocks = _blocks(raw, QT.Q5_K)
    scales, mins = _k_scales_mins(blocks)
    low = _nibbles(blocks[..., 48:176].unflatten(-1, (4, 32))).flatten(-3, -2)
    high = _bits(blocks[..., 16:48], 1).transpose(-1, -2)  # bit i of qh[l] belongs to sub-block i, value l
    codes = low.bitwise_or_(high.bitwise_left_shift(4))
    return scales, mins, codes.flatten(-3)


def q6_k_scales(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q6_K super-blocks of 256 (ql, qh, int8 scales, fp16 d): per-16 scales and int8 codes in [-32, 31]."""
    blocks = _blocks(raw, QT.Q6_K)
    scales = blocks[..., 192:208].view(torch.int8).to(torch.float32).mul_(_fp16_field(blocks, 208).unsqueeze(-1))
    low = _nibbles(blocks[..., :128].unflatten(-1, (2, 64)))  # [.., half, nibble, 64]
    high = _bits(blocks[..., 128:192].unflatten(-1, (2, 32)), 2).transpose(-1, -2)  # [.., half, 4, 32]
    codes = low.flatten(-2).bitwise_or_(high.flatten(-2).bitwise_left_shift(4)).view(torch.int8).sub_(32)
    return scales.flatten(-2), codes.flatten(-3)


_FLOAT_DTYPES = {QT.F32: torch.float32, QT.F16: torch.float16, QT.BF16: torch.bfloat16}
_SYMMETRIC = {QT.Q8_0: q8_0_scales, QT.Q5_0: q5_0_scales, QT.Q6_K: q6_k_scales}
_ASYMMETRIC = {QT.Q4_K: q4_k_scales_mins, QT.Q5_K: q5_k_scales_mins}


def _blocks(raw: torch.Tensor, qtype: QT) -> torch.Tensor:
    """View `raw` as ``[..., n_blocks, block_bytes]`` after checking dtype and row length."""
    if raw.dtype != torch.uint8:
        raise TypeError(f"raw GGUF data must be a uint8 tensor, got {raw.dtype}")
    block_bytes = _BLOCK_GEOMETRY[qtype][1]
    if raw.dim() == 0 or raw.shape[-1] % block_bytes:
        raise ValueError(f"{qtype.name} rows must be whole {block_bytes}-byte blocks, got shape {tuple(raw.shape)}")
    return raw.unflatten(-1, (-1, block_bytes))


def _as_float(raw: torch.Tensor, qtype: QT) -> torch.Tensor:
    """Reinterpret the bytes of `raw` as the float type `qtype`, copying first if they are not aligned for it."""
    _blocks(raw, qtype)
    dtype = _FLOAT_DTYPES[qtype]
    try:
        return raw.view(dtype)
    except RuntimeError:
        return raw.clone(memory_format=torch.contiguous_format).view(dtype)


def _fp16_field(blocks: torch.Tensor, offset: int) -> torch.Tensor:
    """The fp16 at byte `offset` of every block, as float32 ``[..., n_blocks]``."""
    return blocks[..., offset:offset + 2].contiguous().view(torch.float16).squeeze(-1).to(torch.float32)


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Split ``[..., n]`` bytes into ``[..., 2, n]``: low nibbles first, then high nibbles."""
    out = torch.empty((*packed.shape[:-1], 2, packed.shape[-1]), dtype=torch.uint8)
    torch.bitwise_and(packed, 0x0F, out=out[..., 0, :])
    torch.bitwise_right_shift(packed, 4, out=out[..., 1, :])
    return out


def _bits(packed: torch.Tensor, width: int) -> torch.Tensor:
    """Split ``[..., n]`` bytes into ``[..., n, 8 // width]`` fields of `width` bits, least significant first."""
    shifts = torch.arange(0, 8, width, dtype=torch.uint8)
    return packed.unsqueeze(-1).bitwise_right_shift(shifts).bitwise_and_((1 << width) - 1)


def _k_scales_mins(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-32 scales and mins of Q4_K/Q5_K super-blocks, from fp16 d, fp16 dmin and 12 packed 6-bit pairs."""
    packed = blocks[..., 4:16]
    low, mid, top = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    sc = torch.cat([low & 0x3F, (top & 0x0F) | ((low >> 6) << 4)], dim=-1)
    m = torch.cat([mid & 0x3F, (top >> 4) | ((mid >> 6) << 4)], dim=-1)
    scales = sc.to(torch.float32).mul_(_fp16_field(blocks, 0).unsqueeze(-1))
    mins = m.to(torch.float32).mul_(_fp16_field(blocks, 2).unsqueeze(-1))
    return scales.flatten(-2), mins.flatten(-2)
