"""Weight bytes a decoded token reads from a GGUF file's tensors, as stored or as fp32."""

from __future__ import annotations

from pathlib import Path

from gguf import GGUFReader


def gguf_decode_bytes(path: Path, as_fp32: bool = False) -> int:
    """Bytes of every matrix a decode step reads (dense models): all 2-D tensors except the
    embedding table, which only counts when it doubles as the output (tied)."""
    reader = GGUFReader(path)
    names = {t.name for t in reader.tensors}
    tied = "output.weight" not in names
    total = 0
    for tensor in reader.tensors:
        if len(tensor.shape) < 2 or (tensor.name == "token_embd.weight" and not tied):
            continue
        total += int(tensor.n_elements) * 4 if as_fp32 else int(tensor.n_bytes)
    return total
