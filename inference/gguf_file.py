"""Single-file GGUF models: metadata, memory-mapped tensors (quantized blocks stay as stored)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from gguf import GGMLQuantizationType, GGUFReader

from .checkpoint import CheckpointTensor
from .config import ModelConfig
from .errors import ModelFileError, UnsupportedModelError

_DENSE = {GGMLQuantizationType.F32: torch.float32, GGMLQuantizationType.F16: torch.float16}


def read_gguf_metadata(reader: GGUFReader) -> dict[str, Any]:
    """GGUF key/value pairs as plain Python values (strings, numbers, lists)."""
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        meta[key] = field.contents()
    return meta


class GGUFCheckpoint:
    """A GGUF file mapped copy-on-write; tensors are views into the mapping."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._reader = GGUFReader(self.path, "c")
        except Exception as exc:  # the gguf package raises ValueError, IndexError, struct errors ...
            raise ModelFileError(self.path, f"corrupt or truncated GGUF file ({type(exc).__name__}: {exc})") from exc
        self.metadata = read_gguf_metadata(self._reader)
        self._tensors = {t.name: t for t in self._reader.tensors}
        config = ModelConfig.from_gguf(self.metadata, str(self.path))
        if config.num_experts:
            # GGUF has no decoder_sparse_step / mlp_only_layers: a layer without a router is dense.
            dense = tuple(i for i in range(config.num_layers) if f"blk.{i}.ffn_gate_inp.weight" not in self._tensors)
            config = replace(config, mlp_only_layers=dense)
        self.config = config

    def has(self, name: str) -> bool:
        return name in self._tensors

    def tensor(self, name: str) -> CheckpointTensor:
        if name not in self._tensors:
            raise ModelFileError(self.path, f"GGUF file lacks tensor {name!r}")
        return self._convert(self._tensors[name])

    def expert_tensors(self, layer: int, projection: str) -> list[CheckpointTensor]:
        stacked = self.tensor(f"blk.{layer}.ffn_{projection}_exps.weight")
        return [
            CheckpointTensor(f"{stacked.name}[{e}]", stacked.shape[1:], stacked.data[e], stacked.qtype, True)
            for e in range(stacked.shape[0])
        ]

    def _convert(self, tensor) -> CheckpointTensor:
        qtype = GGMLQuantizationType(tensor.tensor_type)
        shape = tuple(int(n) for n in reversed(tensor.shape))
        data = torch.from_numpy(tensor.data)
        if qtype in _DENSE:
            return CheckpointTensor(tensor.name, shape, data.reshape(shape))
        if qtype == GGMLQuantizationType.BF16:
            return CheckpointTensor(tensor.name, shape, data.view(torch.bfloat16).reshape(shape))
        from .quants import SUPPORTED_QTYPES

        if qtype not in SUPPORTED_QTYPES:
            supported = ", ".join(sorted(t.name for t in SUPPORTED_QTYPES))
            raise UnsupportedModelError(
                self.path, f"tensor {tensor.name!r} uses quant type {qtype.name}, not supported (supported: {supported})"
            )
        return CheckpointTensor(tensor.name, shape, data, qtype, file_mapped=True)

    def load_tokenizer(self):
        from .tokenizer import Tokenizer

        return Tokenizer.from_gguf_metadata(self.metadata, self.path)
