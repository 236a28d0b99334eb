"""Vectorized torch dequantization of GGML blocks, in GGUF's on-disk layout.

Every function takes `raw`, a uint8 tensor ``[..., row_bytes]`` of whole blocks
(any leading dims, possibly a read-only mmap view that is never written), and
works on all of its blocks at once.

The ``*_scales`` / ``*_scales_mins`` helpers expose the unpacked pieces for
integer repacking. They return float32 per-group scales (and mins) of shape
``[..., n_values // group]`` plus the integer codes ``[..., n_values]``:

- symmetric types (Q8_0, Q5_0, Q6_K): int8 codes, ``value = scale * code``
- asymmetric types (Q4_K, Q5_K): uint8 codes, ``value = scale * code - min``

Groups are 32 values, except Q6_K's 16. `dequantize` is built on the same unpacking and
computes the same float32 products as gguf-py's reference. Results live on `raw`'s device.
Like GGUF, it assumes a little-endian host.
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
_FLOAT_DTYPES = {QT.F32: torch.float32, QT.F16: torch.float16, QT.BF16: torch.bfloat16}

# Values decoded per step: big enough to amortize per-op overhead, small enough (2 MiB of fp32) to stay in cache.
_CHUNK_VALUES = 1 << 19


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
        raise ValueError(f"{QT(qtype).name} row of {n_values} values is not whole {block_values}-value blocks")
    return n_values // block_values * block_bytes


def dequantize(raw: torch.Tensor, qtype, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decode `raw` (uint8 ``[..., row_bytes]``) into a fresh ``[..., n_values]`` tensor of `out_dtype`."""
    block_values, block_bytes = block_geometry(qtype)
    qtype = QT(qtype)
    _check_raw(raw, qtype)
    n_values = raw.shape[-1] // block_bytes * block_values
    if qtype in _FLOAT_DTYPES:
        return _aligned(raw).view(_FLOAT_DTYPES[qtype]).to(out_dtype, copy=True)
    scales_of, codes_of = _UNPACKERS[qtype]
    blocks = _aligned(raw.reshape(-1, block_bytes))
    per_group = scales_of(blocks)  # (scales,) or (scales, mins), [n_groups] each
    groups_per_block = per_group[0].numel() // max(1, blocks.shape[0])
    out = torch.empty(blocks.shape[0] * block_values, dtype=out_dtype, device=raw.device)
    step = max(1, _CHUNK_VALUES // block_values)
    for first in range(0, blocks.shape[0], step):
        last = min(first + step, blocks.shape[0])
        groups = slice(first * groups_per_block, last * groups_per_block)
        _decode_into(codes_of(blocks[first:last]), [part[groups] for part in per_group],
                     out[first * block_values:last * block_values])
    return out.view(*raw.shape[:-1], n_values)


def q8_0_scales(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q8_0 (fp16 d, 32 x int8): per-32 scales and int8 codes."""
    return _unpack(raw, QT.Q8_0)


def q5_0_scales(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q5_0 (fp16 d, 32 high bits, 16 bytes of low nibbles): per-32 scales and int8 codes in [-16, 15]."""
    return _unpack(raw, QT.Q5_0)


def q4_k_scales_mins(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_K super-blocks of 256: per-32 scales ``d*sc``, mins ``dmin*m`` and uint8 codes in [0, 15]."""
    return _unpack(raw, QT.Q4_K)


def q5_k_scales_mins(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q5_K super-blocks of 256: per-32 scales ``d*sc``, mins ``dmin*m`` and uint8 codes in [0, 31]."""
    return _unpack(raw, QT.Q5_K)


def q6_k_scales(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q6_K super-blocks of 256 (ql, qh, int8 scales, fp16 d): per-16 scales and int8 codes in [-32, 31]."""
    return _unpack(raw, QT.Q6_K)


def _check_raw(raw: torch.Tensor, qtype: QT) -> None:
    """Raise unless `raw` is uint8 with rows of whole `qtype` blocks."""
    if raw.dtype != torch.uint8:
        raise TypeError(f"raw GGUF data must be a uint8 tensor, got {raw.dtype}")
    block_bytes = _BLOCK_GEOMETRY[qtype][1]
    if raw.dim() == 0 or raw.shape[-1] == 0 or raw.shape[-1] % block_bytes:
        raise ValueError(f"{qtype.name} rows must be whole {block_bytes}-byte blocks, got shape {tuple(raw.shape)}")


def _decode_into(codes: torch.Tensor, per_group: list[torch.Tensor], out: torch.Tensor) -> None:
    """Write ``scale * code [- min]`` for ``[n_groups, group]`` codes into the flat slice `out`."""
    scales, *mins = per_group
    in_place = out.dtype == torch.float32
    values = out.view(codes.shape) if in_place else torch.empty(codes.shape, device=codes.device)
    values.copy_(codes)
    values.mul_(scales.unsqueeze(-1))
    if mins:
        values.sub_(mins[0].unsqueeze(-1))
    if not in_place:
        out.view(codes.shape).copy_(values)


def _unpack(raw: torch.Tensor, qtype: QT) -> tuple[torch.Tensor, ...]:
    """A public helper's result: the block unpacker's pieces, each reshaped to ``[..., n]``."""
    _check_raw(raw, qtype)
    scales_of, codes_of = _UNPACKERS[qtype]
    blocks = _aligned(raw.reshape(-1, _BLOCK_GEOMETRY[qtype][1]))
    parts = (*scales_of(blocks), codes_of(blocks))
    return tuple(part.reshape(*raw.shape[:-1], -1) for part in parts)


def _aligned(raw: torch.Tensor) -> torch.Tensor:
    """`raw` if contiguous and 8-byte aligned, so its bytes can be viewed as any wider type; else an aligned copy."""
    if raw.is_contiguous() and raw.storage_offset() % 8 == 0 and raw.data_ptr() % 8 == 0:
        return raw
    return raw.clone(memory_format=torch.contiguous_format)


# Unpackers of aligned ``[n_blocks, block_bytes]``: one gives the per-group float32 scales (and mins),
# ``[n_groups]`` each, for a whole tensor at once; the other the codes ``[n_groups, group]``, chunk by chunk.
# Bit fields are unpacked eight bytes at a time in int64 words (little-endian byte order, as GGUF is).

_LOW_NIBBLES = 0x0F0F0F0F0F0F0F0F
_BIT0 = 0x0101010101010101
_BITS01 = 0x0303030303030303
_BIT5 = 0x2020202020202020


def _block_scales(blocks: torch.Tensor) -> tuple[torch.Tensor]:
    """Q8_0 and Q5_0: the fp16 d that starts each block."""
    return (_fp16_field(blocks, 0),)


def _q8_0_codes(blocks: torch.Tensor) -> torch.Tensor:
    return blocks[:, 2:].view(torch.int8)


def _q5_0_codes(blocks: torch.Tensor) -> torch.Tensor:
    codes = _nibble_words(_words(blocks, 6, 22)).view(-1, 4)  # low nibbles of the 16 bytes, then high
    high_bytes = blocks[:, 2:6].clone(memory_format=torch.contiguous_format).view(-1).to(torch.int64)
    codes.bitwise_or_(_Q5_0_HIGH_BITS.to(blocks.device).index_select(0, high_bytes).view(-1, 4))
    return codes.view(torch.int8).view(-1, 32)


def _q4_k_codes(blocks: torch.Tensor) -> torch.Tensor:
    codes = _nibble_words(_words(blocks, 16, 144).view(-1, 4, 4))  # 4 x 32 bytes: sub-blocks 2c (low), 2c+1 (high)
    return codes.view(torch.uint8).view(-1, 32)


def _q5_k_codes(blocks: torch.Tensor) -> torch.Tensor:
    codes = _nibble_words(_words(blocks, 48, 176).view(-1, 4, 4)).view(-1, 8, 4)
    sub_blocks = torch.arange(8, device=blocks.device).view(8, 1)
    high = _words(blocks, 16, 48).unsqueeze(1) >> sub_blocks  # bit i of qh[l]: sub-block i, value l
    codes.bitwise_or_(high.bitwise_and_(_BIT0).bitwise_left_shift_(4))
    return codes.view(torch.uint8).view(-1, 32)


def _q6_k_scales(blocks: torch.Tensor) -> tuple[torch.Tensor]:
    """Q6_K: the fp16 d at the end of each block times its 16 int8 scales."""
    scales = blocks[:, 192:208].view(torch.int8).to(torch.float32).mul_(_fp16_field(blocks, 208).unsqueeze(-1))
    return (scales.view(-1),)


def _q6_k_codes(blocks: torch.Tensor) -> torch.Tensor:
    codes = _nibble_words(_words(blocks, 0, 128).view(-1, 2, 8)).view(-1, 2, 4, 4)  # [n, half, 32-value run, word]
    field_shifts = torch.arange(0, 8, 2, device=blocks.device).view(4, 1)
    high = _words(blocks, 128, 192).view(-1, 2, 1, 4) >> field_shifts  # 2-bit field k: run k
    codes.bitwise_or_(high.bitwise_and_(_BITS01).bitwise_left_shift_(4))
    # code - 32 as int8: flip bit 5, then copy the new bit 5 into bits 6 and 7 (sign extension from 6 bits).
    codes.bitwise_xor_(_BIT5)
    sign = codes & _BIT5
    codes.bitwise_or_(sign.bitwise_left_shift_(1)).bitwise_or_(sign.bitwise_left_shift_(1))
    return codes.view(torch.int8).view(-1, 16)


def _spread_q5_0_high_bits() -> torch.Tensor:
    """For each qh byte, 8 bytes holding what its bits add to a Q5_0 code once 16 is taken off.

    Bit set: the code is ``16 + low - 16 = low``, add 0. Bit clear: ``low - 16``, in int8 ``low | 0xF0``.
    """
    byte = torch.arange(256).unsqueeze(-1)
    missing = (byte >> torch.arange(8)).bitwise_and(1).bitwise_xor(1)
    return (missing * 0xF0).to(torch.uint8).view(torch.int64).view(256)


_Q5_0_HIGH_BITS = _spread_q5_0_high_bits()


def _words(blocks: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Bytes ``start:stop`` of every block as int64 words ``[n_blocks, (stop - start) // 8]`` (a view when aligned)."""
    if blocks.shape[-1] % 8 == 0 and start % 8 == 0:
        return blocks.view(torch.int64)[:, start // 8:stop // 8]
    return blocks[:, start:stop].clone(memory_format=torch.contiguous_format).view(torch.int64)


def _nibble_words(words: torch.Tensor) -> torch.Tensor:
    """Nibbles of ``[..., n]`` words as ``[..., 2n]`` words: all low nibbles, then all high, one per byte."""
    return torch.cat([words & _LOW_NIBBLES, (words >> 4).bitwise_and_(_LOW_NIBBLES)], dim=-1)


def _fp16_field(blocks: torch.Tensor, offset: int) -> torch.Tensor:
    """The fp16 at byte `offset` of every block, as float32 ``[n_blocks]``."""
    return blocks.view(torch.float16)[:, offset // 2].to(torch.float32)


def _k_scales_mins(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-32 scales and mins of Q4_K/Q5_K super-blocks: fp16 d and dmin times 6-bit sc and m.

    Bytes 4-15 hold (per sub-block j < 4) sc_j and m_j in the low 6 bits of bytes 4+j and 8+j; for
    j >= 4 their low 4 bits are the nibbles of byte 12+j-4 and their top 2 bits the spare bits 6-7
    of bytes 4+j-4 and 8+j-4. Four bytes at a time in int32 words.
    """
    low, mid, top = blocks.view(torch.int32)[:, 1:4].unbind(-1)
    sc = torch.stack([low & 0x3F3F3F3F, (top & 0x0F0F0F0F) | ((low >> 2) & 0x30303030)], dim=-1)
    m = torch.stack([mid & 0x3F3F3F3F, ((top >> 4) & 0x0F0F0F0F) | ((mid >> 2) & 0x30303030)], dim=-1)
    scales = sc.view(torch.uint8).view(-1, 8).to(torch.float32).mul_(_fp16_field(blocks, 0).unsqueeze(-1))
    mins = m.view(torch.uint8).view(-1, 8).to(torch.float32).mul_(_fp16_field(blocks, 2).unsqueeze(-1))
    return scales.view(-1), mins.view(-1)


_UNPACKERS = {
    QT.Q8_0: (_block_scales, _q8_0_codes),
    QT.Q5_0: (_block_scales, _q5_0_codes),
    QT.Q4_K: (_k_scales_mins, _q4_k_codes),
    QT.Q5_K: (_k_scales_mins, _q5_k_codes),
    QT.Q6_K: (_q6_k_scales, _q6_k_codes),
}
