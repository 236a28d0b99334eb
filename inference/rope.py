"""Rotary position embedding (the rotate-half / NeoX form Qwen uses), tables grown on demand.

With `rotary_dim` < head width (qwen3_next's partial rotary), only the first `rotary_dim` channels
of each head turn; the rest pass through.
"""

from __future__ import annotations

import torch


class RotaryEmbedding:
    def __init__(self, head_dim: int, theta: float, rotary_dim: int | None = None):
        self.rotary_dim = rotary_dim or head_dim
        dim = self.rotary_dim
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self._cos = torch.empty(0, dim)
        self._sin = torch.empty(0, dim)

    def tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [>= length, rotary_dim] (fp32) for positions 0, 1, ..."""
        if length > self._cos.shape[0]:
            size = max(length, 2 * self._cos.shape[0], 1024)
            freqs = torch.outer(torch.arange(size, dtype=torch.float32), self.inv_freq)
            angles = torch.cat((freqs, freqs), dim=-1)
            self._cos, self._sin = angles.cos(), angles.sin()
        return self._cos, self._sin

    def __call__(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotate x [heads, n, head_dim] for positions [start, start+n)."""
        n = x.shape[-2]
        cos, sin = self.tables(start + n)
        cos = cos[start : start + n].to(x.dtype)
        sin = sin[start : start + n].to(x.dtype)
        if self.rotary_dim < x.shape[-1]:
            turned, kept = x[..., : self.rotary_dim], x[..., self.rotary_dim :]
            return torch.cat((self._rotate(turned, cos, sin), kept), dim=-1)
        return self._rotate(x, cos, sin)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin
