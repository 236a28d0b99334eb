"""The cache of a hybrid model (qwen3_next): keys/values of its full-attention layers plus the
recurrent state of its linear-attention layers.

Keys/values can be cut back to any length; a recurrent state can't. `truncate` therefore keeps
the longest prefix it can rebuild: any point inside the last forward pass when that pass was short
(its mixer inputs are kept, and the state is recomputed from them without the weights' matmuls),
else the latest snapshot at or before the cut, else nothing. Callers read `length` afterwards and
recompute the tokens it lost. Snapshots are references to immutable states, taken with
`snapshot()`; the prefix cache keeps them across requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .gated_deltanet import RECURRENT_MAX_TOKENS, LinearAttentionState, MixerInputs
from .kv_cache import KVCache


@dataclass(frozen=True)
class _Pass:
    """One layer's part of a forward pass that began at `start`: enough to rebuild its state inside it."""

    start: int
    layer: object  # the GatedDeltaNet, which knows how to recompute
    before: LinearAttentionState | None
    inputs: MixerInputs

    @property
    def stop(self) -> int:
        return self.start + self.inputs.qkv.shape[0]


class HybridCache(KVCache):
    """KV for `num_attention_layers` layers (KVCache) and states for `num_linear_layers` layers."""

    def __init__(self, num_attention_layers: int, num_linear_layers: int, num_kv_heads: int, head_dim: int,
                 max_length: int, dtype: torch.dtype):
        super().__init__(num_attention_layers, num_kv_heads, head_dim, max_length, dtype)
        self.states: list[LinearAttentionState | None] = [None] * num_linear_layers  # None: no tokens yet
        self.snapshots: dict[int, list[LinearAttentionState]] = {}
        self._passes: list[_Pass | None] = [None] * num_linear_layers

    @property
    def nbytes(self) -> int:
        """KV storage plus the live states (snapshots are counted where they are kept: the prefix cache)."""
        return super().nbytes + sum(s.nbytes for s in self.states if s is not None)

    def linear_state(self, slot: int) -> LinearAttentionState | None:
        return self.states[slot]

    def set_linear_state(self, slot: int, state: LinearAttentionState, layer, before: LinearAttentionState | None,
                         inputs: MixerInputs, start: int) -> None:
        """Called by each linear-attention layer for the pass [start, start + n)."""
        self.states[slot] = state
        short = inputs.qkv.shape[0] <= RECURRENT_MAX_TOKENS
        self._passes[slot] = _Pass(start, layer, before, inputs) if short else None

    def snapshot(self) -> None:
        """Remember the states at the current length."""
        if self.length > 0:
            self.snapshots[self.length] = list(self.states)

    def restore(self, length: int, states: list[LinearAttentionState]) -> None:
        """Take `states` as the state after `length` tokens (their keys/values must already be written)."""
        self.states = list(states)
        self._passes = [None] * len(self.states)
        self.length = length

    def truncate(self, length: int) -> None:
        """Keep at most `length` positions: `length` itself where the state can be rebuilt there, else
        the latest snapshot before it, else none (see the module docstring)."""
        if length >= self.length:
            return
        if length in self.snapshots:
            self.restore(length, self.snapshots[length])
        elif all(p is not None and p.start <= length <= p.stop for p in self._passes):
            self.states = [p.layer.state_after(p.before, p.inputs, length - p.start) for p in self._passes]
            self._passes = [_Pass(p.start, p.layer, p.before, p.inputs.first(length - p.start))
                            for p in self._passes]
            self.length = length
        else:
            best = max((p for p in self.snapshots if p <= length), default=0)
            if best:
                self.restore(best, self.snapshots[best])
            else:
                self.restore(0, [None] * len(self.states))
        self.snapshots = {p: s for p, s in self.snapshots.items() if p <= self.length}
