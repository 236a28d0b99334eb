"""Per-layer key/value cache for one sequence, grown on demand up to the context length."""

from __future__ import annotations

import torch

_GROWTH_STEP = 256


class KVCache:
    """Keys and values for positions [0, length) of one sequence, every layer.

    Storage per layer is [kv_heads, capacity, head_dim]; capacity grows in steps, never past
    `max_length`. `truncate` keeps a prefix, which is how cached prompts are reused.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, max_length: int, dtype: torch.dtype):
        self.num_layers, self.num_kv_heads, self.head_dim = num_layers, num_kv_heads, head_dim
        self.max_length = max_length
        self.dtype = dtype
        self.length = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._capacity = 0

    @property
    def nbytes(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self._capacity * self.head_dim * self.dtype.itemsize

    def reserve(self, length: int) -> None:
        """Make room for `length` positions."""
        if length > self.max_length:
            raise ValueError(f"sequence of {length} tokens exceeds the context length {self.max_length}")
        if length <= self._capacity:
            return
        capacity = min(self.max_length, max(length, 2 * self._capacity, _GROWTH_STEP))
        capacity = min(self.max_length, -(-capacity // _GROWTH_STEP) * _GROWTH_STEP)
        shape = (self.num_kv_heads, capacity, self.head_dim)
        if not self._capacity:
            self.keys = [torch.empty(shape, dtype=self.dtype) for _ in range(self.num_layers)]
            self.values = [torch.empty(shape, dtype=self.dtype) for _ in range(self.num_layers)]
        else:  # layer by layer, each old tensor freed once copied: the peak is one layer over, not all
            for stored in (self.keys, self.values):
                for layer, old in enumerate(stored):
                    stored[layer] = torch.empty(shape, dtype=self.dtype)
                    stored[layer][:, : self.length] = old[:, : self.length]
                    del old
        self._capacity = capacity

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v ([kv_heads, n, head_dim]) at positions [start, start+n); return all keys/values so far."""
        stop = start + k.shape[1]
        self.keys[layer][:, start:stop] = k
        self.values[layer][:, start:stop] = v
        return self.keys[layer][:, :stop], self.values[layer][:, :stop]

    def layer_storage(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's whole key and value storage [kv_heads, capacity, head_dim] (for native writers)."""
        return self.keys[layer], self.values[layer]

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on."""
        self.length = min(self.length, length)
