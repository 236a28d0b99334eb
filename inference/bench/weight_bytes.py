"""Weight bytes a decoded token reads from a GGUF file's tensors, as stored or as fp32."""

from __future__ import annotations

from pathlib import Path

from ..gguf_format import GGUFContainer


def gguf_decode_bytes(path: Path, as_fp32: bool = False) -> int:
    """Bytes of every matrix a decode step reads (dense models): all 2-D tensors except the
    embedding table, which only counts when it doubles as the output (tied)."""
    tensors = GGUFContainer(path).tensors
    tied = "output.weight" not in tensors
    total = 0
    for tensor in tensors.values():
        if len(tensor.dims) < 2 or (tensor.name == "token_embd.weight" and not tied):
            continue
        total += int(tensor.n_elements) * 4 if as_fp32 else int(tensor.n_bytes)
    return total
