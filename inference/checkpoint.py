"""One view over both model formats: tensors by canonical (GGUF-style) name, config and tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from .config import ModelConfig
from .errors import ModelFileError


@dataclass(frozen=True)
class CheckpointTensor:
    """A weight as stored: `data` is a typed tensor (dense) or uint8 blocks [..., row_bytes] (quantized).

    `shape` is the logical shape in PyTorch order (out_features, in_features); `qtype` is the GGML
    quantization type for block-quantized data and None for dense data. `data` may be a memory map:
    never write into it. `file_mapped` marks data that views a private read-only file mapping, whose
    pages a kernel may release once it holds its own copy.
    """

    name: str
    shape: tuple[int, ...]
    data: torch.Tensor
    qtype: object | None = None
    file_mapped: bool = False

    @property
    def is_quantized(self) -> bool:
        return self.qtype is not None


class Checkpoint(Protocol):
    """What the model builder reads from a model file, whatever its format."""

    path: Path
    config: ModelConfig

    def has(self, name: str) -> bool: ...

    def tensor(self, name: str) -> CheckpointTensor: ...

    def expert_tensors(self, layer: int, projection: str) -> list[CheckpointTensor]:
        """Per-expert views of `ffn_{gate,up,down}_exps` for one layer (no copies)."""
        ...

    def load_tokenizer(self): ...


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a single .gguf file or a Hugging Face model directory."""
    from .gguf_file import GGUFCheckpoint
    from .safetensors_file import SafetensorsCheckpoint

    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such file or directory")
    if path.is_dir():
        return SafetensorsCheckpoint(path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == b"GGUF":
        return GGUFCheckpoint(path)
    if path.suffix == ".gguf":
        raise ModelFileError(path, f"not a GGUF file (bad magic {magic!r}, expected b'GGUF')")
    raise ModelFileError(
        path, "not a model: expected a .gguf file or a directory with config.json and *.safetensors"
    )
