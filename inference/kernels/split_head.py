"""The output head split into coarse and residual codes (native/split_head.cpp).

A Q8_0 or Q6_K output head is repacked at load into a coarse plane (the top 4 bits of every code,
with the file's scales) and a residual plane (the rest), together the file's bytes: the repacked
copy replaces the file's pages. A greedy step reads only the coarse plane (53% of a Q8_0 head, 70%
of a Q6_K one), which bounds every logit; the few rows that may hold the largest one also read their
residual codes, so the chosen token is exactly the full head's. Full logits (sampling, scoring) read
both planes and give every row that same exact logit.
"""

from __future__ import annotations

from typing import Callable

import torch
from gguf import GGMLQuantizationType as QT

from ..checkpoint import CheckpointTensor
from ..linear import LinearKernel
from .native_build import native_ops
from .page_release import release_file_pages

SPLIT_TYPES = (QT.Q8_0, QT.Q6_K)
PACK_SLICE_BYTES = 8 << 20  # file bytes packed between page releases


class SplitHeadLinear(LinearKernel):
    """y = x @ W.T for an output head held as coarse and residual code planes."""

    def __init__(self, ops, raw: torch.Tensor, qtype, out_features: int, in_features: int,
                 release_slice: Callable[[torch.Tensor], None] | None = None):
        """Packs `raw` slice by slice; `release_slice`, if given, gets each packed slice of `raw` (a
        file-mapped head gives its pages back as it goes, so the file and the copy are never both
        resident: +145 MB at load for the 0.5B's head otherwise)."""
        self.ops, self.qtype_id = ops, int(qtype)
        self.out_features, self.in_features = out_features, in_features
        raw = raw.reshape(out_features, -1)
        self.coarse, self.residual = ops.split_head_planes(raw, self.qtype_id, in_features)
        step = max(1, PACK_SLICE_BYTES // max(1, raw.shape[1]))
        for start in range(0, out_features, step):
            rows = slice(start, start + step)
            ops.split_head_pack_(raw[rows], self.coarse[rows], self.residual[rows], self.qtype_id, in_features)
            if release_slice is not None:
                release_slice(raw[rows])

    def __call__(self, x):
        return self._logits(x, greedy=False)

    def greedy_logits(self, x):
        """Exact logits for the rows that may hold each token's largest one, -inf for the rest."""
        return self._logits(x, greedy=True)

    def _logits(self, x: torch.Tensor, greedy: bool) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        y = self.ops.split_head_logits(rows, self.coarse, self.residual, self.qtype_id, greedy)
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def rows(self, ids):
        return self.ops.split_head_rows(self.coarse, self.residual, self.qtype_id, self.in_features, ids)

    @property
    def nbytes(self):
        return self.coarse.numel() + self.residual.numel()

    @property
    def greedy_bytes(self):
        return self.coarse.numel()


def split_head(tensor: CheckpointTensor) -> SplitHeadLinear | None:
    """The split kernel for an output head where it applies: a Q8_0/Q6_K head, and native kernels built
    with the AVX-512 code (the plain C++ build would be slower than the file's own kernel)."""
    if tensor.qtype not in SPLIT_TYPES:
        return None
    ops = native_ops()
    if ops is None or not ops.tiles_vectorized():
        return None
    release = release_file_pages if tensor.file_mapped else None
    return SplitHeadLinear(ops, tensor.data, tensor.qtype, *tensor.shape, release_slice=release)
