"""Single-file GGUF models: metadata, memory-mapped tensors (quantized blocks stay as stored)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from gguf import GGMLQuantizationType

from .checkpoint import CheckpointTensor
from .config import ModelConfig
from .errors import ModelFileError, UnsupportedModelError
from .gguf_format import GGUFContainer, GGUFTensorInfo

_DENSE = (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16)


class GGUFCheckpoint:
    """A GGUF file mapped copy-on-write; tensors are views into the mapping."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._container = GGUFContainer(self.path)
        except Exception as exc:  # malformed headers raise ValueError, struct.error, UnicodeError ...
            raise ModelFileError(self.path, f"corrupt or truncated GGUF file ({type(exc).__name__}: {exc})") from exc
        self.metadata = self._container.metadata
        self._tensors = self._container.tensors
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

    def _convert(self, tensor: GGUFTensorInfo) -> CheckpointTensor:
        qtype, shape = tensor.qtype, tensor.shape
        data = self._container.data(tensor.name)
        if qtype in _DENSE:
            return CheckpointTensor(tensor.name, shape, data)
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
