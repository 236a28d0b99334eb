"""A fast reader for the GGUF container: metadata as Python values, tensors as views of one mapping.

The `gguf` package's reader builds a numpy view per metadata value, which takes 10-60 s for a
Qwen tokenizer's 151k tokens and merges; this one reads strings in one pass and numbers with
`numpy.frombuffer`. The file is mapped copy-on-write, so tensors are views that never write back.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF value type -> (struct format, numpy dtype) for fixed-size values.
_SCALARS = {
    0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
    4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_),
    10: ("<Q", np.uint64), 11: ("<q", np.int64), 12: ("<d", np.float64),
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    dims: tuple[int, ...]  # GGUF order: dims[0] is the contiguous (row) length
    qtype: GGMLQuantizationType
    offset: int  # from the start of the file

    @property
    def shape(self) -> tuple[int, ...]:
        """Row-major shape (outermost first), as torch and numpy index it."""
        return tuple(reversed(self.dims))

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64))

    @property
    def n_bytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.qtype]
        return self.n_elements // block * size


class GGUFFormatError(ValueError):
    """The bytes are not a well-formed GGUF file."""


class GGUFContainer:
    """One GGUF file: `metadata` (key -> value), `tensors` (name -> info) and `data(name)`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        self._bytes = torch.frombuffer(self._map, dtype=torch.uint8)
        self.metadata: dict[str, Any] = {}
        self.tensors: dict[str, GGUFTensorInfo] = {}
        try:
            self._parse()
        except struct.error as exc:
            raise GGUFFormatError(f"the header runs past the end of the file (truncated?): {exc}") from None

    def data(self, name: str) -> torch.Tensor:
        """The tensor's stored bytes as a view: dense types in their dtype with `shape`; block
        types as uint8 [..., row_bytes] (one row of blocks per output feature)."""
        info = self.tensors[name]
        raw = self._bytes[info.offset : info.offset + info.n_bytes]
        if info.qtype == GGMLQuantizationType.F32:
            return raw.view(torch.float32).reshape(info.shape)
        if info.qtype == GGMLQuantizationType.F16:
            return raw.view(torch.float16).reshape(info.shape)
        if info.qtype == GGMLQuantizationType.BF16:
            return raw.view(torch.bfloat16).reshape(info.shape)
        block, size = GGML_QUANT_SIZES[info.qtype]
        return raw.reshape(*info.shape[:-1], info.dims[0] // block * size)

    def _parse(self) -> None:
        buffer = self._map
        if buffer[:4] != MAGIC:
            raise GGUFFormatError(f"not a GGUF file (magic {bytes(buffer[:4])!r})")
        version, tensor_count, kv_count = struct.unpack_from("<IQQ", buffer, 4)
        if version not in (2, 3):
            raise GGUFFormatError(f"unsupported GGUF version {version} (big-endian or too new?)")
        position = 24
        for _ in range(kv_count):
            key, position = self._string(position)
            (value_type,), position = struct.unpack_from("<I", buffer, position), position + 4
            self.metadata[key], position = self._value(value_type, position)
        infos = []
        for _ in range(tensor_count):
            name, position = self._string(position)
            (n_dims,), position = struct.unpack_from("<I", buffer, position), position + 4
            dims = struct.unpack_from(f"<{n_dims}Q", buffer, position)
            position += 8 * n_dims
            qtype_id, offset = struct.unpack_from("<IQ", buffer, position)
            position += 12
            try:
                qtype = GGMLQuantizationType(qtype_id)
            except ValueError:
                raise GGUFFormatError(f"tensor {name!r} has unknown GGML type {qtype_id}") from None
            infos.append((name, tuple(int(d) for d in dims), qtype, offset))
        alignment = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        data_start = -(-position // alignment) * alignment
        for name, dims, qtype, offset in infos:
            info = GGUFTensorInfo(name, dims, qtype, data_start + offset)
            if info.offset + info.n_bytes > len(buffer):
                raise GGUFFormatError(f"tensor {name!r} runs past the end of the file (truncated?)")
            self.tensors[name] = info

    def _string(self, position: int) -> tuple[str, int]:
        (length,) = struct.unpack_from("<Q", self._map, position)
        end = position + 8 + length
        if end > len(self._map):
            raise GGUFFormatError("a string runs past the end of the file (truncated?)")
        return self._map[position + 8 : end].decode("utf-8", errors="replace"), end

    def _value(self, value_type: int, position: int) -> tuple[Any, int]:
        if value_type == _STRING:
            return self._string(position)
        if value_type in _SCALARS:
            fmt, _ = _SCALARS[value_type]
            return struct.unpack_from(fmt, self._map, position)[0], position + struct.calcsize(fmt)
        if value_type != _ARRAY:
            raise GGUFFormatError(f"unknown metadata value type {value_type}")
        item_type, count = struct.unpack_from("<IQ", self._map, position)
        position += 12
        if item_type in _SCALARS:
            dtype = np.dtype(_SCALARS[item_type][1])
            end = position + count * dtype.itemsize
            if end > len(self._map):
                raise GGUFFormatError("an array runs past the end of the file (truncated?)")
            return np.frombuffer(self._map, dtype=dtype, count=count, offset=position).tolist(), end
        if item_type == _STRING:
            return self._strings(count, position)
        items = []
        for _ in range(count):
            item, position = self._value(item_type, position)
            items.append(item)
        return items, position

    def _strings(self, count: int, position: int) -> tuple[list[str], int]:
        buffer, unpack, size = self._map, struct.Struct("<Q").unpack_from, len(self._map)
        items = []
        for _ in range(count):
            (length,) = unpack(buffer, position)
            start, position = position + 8, position + 8 + length
            if position > size:
                raise GGUFFormatError("a string runs past the end of the file (truncated?)")
            items.append(buffer[start:position].decode("utf-8", errors="replace"))
        return items, position
