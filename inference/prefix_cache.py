"""A token-level radix tree of computed keys/values, shared by every request to one model.

Each node holds a run of token ids and their KV (per layer [kv_heads, n, head_dim]); the path
from the root spells a prefix. A request copies the KV of its longest cached prefix into its
working `KVCache`, computes the rest, then inserts what it computed. Nodes on a path in use are
pinned; least-recently-used unpinned leaves are evicted when the tree exceeds its budget.

A recurrent model's state can't be cut at any token, so for a `HybridCache` nodes also keep the
snapshots the request took (states after given positions), a match resumes from the latest
snapshot inside it, and only tokens up to the last snapshot are stored. Snapshots count against
the same budget.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from .gated_deltanet import LinearAttentionState
from .hybrid_cache import HybridCache
from .kv_cache import KVCache

Snapshot = list[LinearAttentionState]


class _Node:
    __slots__ = ("tokens", "keys", "values", "snapshots", "parent", "children", "pins", "last_used")

    def __init__(self, tokens: list[int], keys: list[torch.Tensor], values: list[torch.Tensor],
                 parent: "_Node | None", snapshots: dict[int, Snapshot] | None = None):
        self.tokens, self.keys, self.values, self.parent = tokens, keys, values, parent
        self.snapshots = snapshots or {}  # offset in 1..len(tokens) -> states after that many of its tokens
        self.children: dict[int, _Node] = {}
        self.pins = 0
        self.last_used = 0

    @property
    def nbytes(self) -> int:
        states = sum(s.nbytes for snapshot in self.snapshots.values() for s in snapshot)
        return sum(t.nbytes for t in self.keys) + sum(t.nbytes for t in self.values) + states


@dataclass
class PrefixMatch:
    """The longest cached prefix of a sequence: `length` tokens held by `nodes` (root excluded)."""

    length: int
    nodes: list[_Node] = field(default_factory=list)


@dataclass
class PrefixCacheStats:
    lookups: int = 0
    hits: int = 0  # lookups that matched at least one token
    tokens_looked_up: int = 0
    tokens_matched: int = 0
    evicted_tokens: int = 0


class PrefixCache:
    """Radix tree of KV over token ids, bounded by `budget_mib` of tensor memory."""

    def __init__(self, budget_mib: float = 512.0):
        if budget_mib < 0:
            raise ValueError("the prefix cache budget must be >= 0 MiB")
        self.budget_bytes = int(budget_mib * 1024 * 1024)
        self.nbytes = 0
        self.stats = PrefixCacheStats()
        self._root = _Node([], [], [], None)
        self._clock = itertools.count(1)

    @property
    def cached_tokens(self) -> int:
        return sum(len(node.tokens) for node in self._nodes())

    def match(self, ids: list[int]) -> PrefixMatch:
        """The longest cached prefix of `ids`; marks its nodes as recently used."""
        found = PrefixMatch(0)
        node, now = self._root, next(self._clock)
        while found.length < len(ids):
            child = node.children.get(ids[found.length])
            if child is None:
                break
            shared = _common_length(child.tokens, ids, found.length)
            if shared < len(child.tokens):
                child = self._split(child, shared)
            child.last_used = now
            found.nodes.append(child)
            found.length += shared
            node = child
        self.stats.lookups += 1
        self.stats.hits += found.length > 0
        self.stats.tokens_looked_up += len(ids)
        self.stats.tokens_matched += found.length
        return found

    def pin(self, found: PrefixMatch) -> None:
        """Keep the matched nodes from eviction until `unpin`."""
        for node in found.nodes:
            node.pins += 1

    def unpin(self, found: PrefixMatch) -> None:
        for node in found.nodes:
            node.pins -= 1

    @torch.inference_mode()
    def copy_into(self, found: PrefixMatch, cache: KVCache, start: int) -> None:
        """Write the matched KV of positions [start, found.length) into `cache`, which holds [0, start).
        A `HybridCache` gets the KV up to the latest snapshot in the match, and that snapshot's states."""
        length, states = found.length, None
        if isinstance(cache, HybridCache):
            length, states = _latest_snapshot(found)
        cache.truncate(start)
        start = cache.length
        if length <= start:
            return
        cache.reserve(length)
        offset = 0
        for node in found.nodes:
            end = min(offset + len(node.tokens), length)
            if end > start:
                lo, hi = max(start, offset) - offset, end - offset
                for layer in range(cache.num_layers):
                    cache.write(layer, offset + lo, node.keys[layer][:, lo:hi], node.values[layer][:, lo:hi])
            offset += len(node.tokens)
        if states is not None:
            cache.restore(length, states)
        else:
            cache.length = length

    @torch.inference_mode()
    def insert(self, ids: list[int], cache: KVCache) -> None:
        """Store the KV of `ids[:cache.length]` (already in `cache`) that the tree lacks, then evict to budget.
        From a `HybridCache`: the tokens up to its last snapshot, and its snapshots."""
        if isinstance(cache, HybridCache):
            snapshots = cache.snapshots
            length = max((p for p in snapshots if p <= cache.length), default=0)
        else:
            snapshots, length = {}, cache.length
        ids = ids[:length]
        node, done, now = self._root, 0, next(self._clock)
        path = []  # (node, position of its first token)
        while done < len(ids):
            child = node.children.get(ids[done])
            if child is None:
                keys = [k[:, done : len(ids)].clone() for k in cache.keys]
                values = [v[:, done : len(ids)].clone() for v in cache.values]
                child = _Node(list(ids[done:]), keys, values, node)
                node.children[ids[done]] = child
                self.nbytes += child.nbytes
                child.last_used = now
                path.append((child, done))
                break
            shared = _common_length(child.tokens, ids, done)
            if shared < len(child.tokens):
                child = self._split(child, shared)
            child.last_used = now
            path.append((child, done))
            done += shared
            node = child
        for position, states in snapshots.items():
            holder = next(((n, s) for n, s in path if s < position <= s + len(n.tokens)), None)
            if holder is not None and position - holder[1] not in holder[0].snapshots:
                holder[0].snapshots[position - holder[1]] = states
                self.nbytes += sum(state.nbytes for state in states)
        self.evict(self.budget_bytes)

    def evict(self, budget_bytes: int) -> None:
        """Drop least-recently-used unpinned leaves until the tree holds at most `budget_bytes`."""
        while self.nbytes > budget_bytes:
            leaves = [n for n in self._nodes() if not n.children and n.pins == 0]
            if not leaves:
                return
            victim = min(leaves, key=lambda n: n.last_used)
            del victim.parent.children[victim.tokens[0]]
            self.nbytes -= victim.nbytes
            self.stats.evicted_tokens += len(victim.tokens)

    def clear(self) -> None:
        self.evict(0)

    @torch.inference_mode()
    def _split(self, node: _Node, at: int) -> _Node:
        """Cut `node` after `at` tokens; return the new upper part. Pins stay on the lower part: a node
        with a child is never evicted, so the upper part needs none."""
        upper = _Node(node.tokens[:at], [k[:, :at].clone() for k in node.keys],
                      [v[:, :at].clone() for v in node.values], node.parent,
                      {o: s for o, s in node.snapshots.items() if o <= at})
        upper.last_used = node.last_used
        before = node.nbytes
        node.tokens = node.tokens[at:]
        node.keys = [k[:, at:].clone() for k in node.keys]
        node.values = [v[:, at:].clone() for v in node.values]
        node.snapshots = {o - at: s for o, s in node.snapshots.items() if o > at}
        node.parent.children[upper.tokens[0]] = upper
        node.parent = upper
        upper.children[node.tokens[0]] = node
        self.nbytes += upper.nbytes + node.nbytes - before
        return upper

    def _nodes(self):
        stack = list(self._root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())


def _latest_snapshot(found: PrefixMatch) -> tuple[int, Snapshot | None]:
    """The last position of the match with a snapshot, and its states ((0, None) if none)."""
    best, states, offset = 0, None, 0
    for node in found.nodes:
        for o, snapshot in node.snapshots.items():
            if offset + o > best:
                best, states = offset + o, snapshot
        offset += len(node.tokens)
    return best, states


def _common_length(tokens: list[int], ids: list[int], start: int) -> int:
    n = min(len(tokens), len(ids) - start)
    i = 0
    while i < n and tokens[i] == ids[start + i]:
        i += 1
    return i
