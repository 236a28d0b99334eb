"""The radix-tree prefix cache: matching, splitting, copying, pinning, LRU eviction, and exact reuse
across requests on tiny random models."""

from __future__ import annotations

import pytest
import torch

from inference import GenerationConfig, load_model
from inference.engine import Engine, SpeculationConfig
from inference.kv_cache import KVCache
from inference.prefix_cache import PrefixCache

LAYERS, HEAD_DIM = 2, 4
TOKEN_BYTES = 2 * LAYERS * HEAD_DIM * 4  # keys and values, one kv head, fp32


def _computed(ids: list[int]) -> KVCache:
    """A cache whose KV for each position encodes (token, position), as if a model had run `ids`."""
    cache = KVCache(LAYERS, 1, HEAD_DIM, 4096, torch.float32)
    cache.reserve(len(ids))
    for layer in range(LAYERS):
        k = torch.tensor([[float(t)] * HEAD_DIM for t in ids]).unsqueeze(0) + layer
        cache.write(layer, 0, k, -k)
    cache.length = len(ids)
    return cache


def _restored(tree: PrefixCache, ids: list[int]) -> tuple[int, KVCache]:
    cache = KVCache(LAYERS, 1, HEAD_DIM, 4096, torch.float32)
    found = tree.match(ids)
    tree.copy_into(found, cache, 0)
    return found.length, cache


def test_longest_prefix_is_matched_and_its_kv_copied_exactly():
    tree = PrefixCache(budget_mib=1)
    tree.insert([1, 2, 3, 4, 5], _computed([1, 2, 3, 4, 5]))
    tree.insert([1, 2, 3, 9, 9, 9], _computed([1, 2, 3, 9, 9, 9]))  # splits the first run after 3 tokens
    length, cache = _restored(tree, [1, 2, 3, 9, 9, 7])
    assert length == 5
    expected = _computed([1, 2, 3, 9, 9])
    for layer in range(LAYERS):
        assert torch.equal(cache.keys[layer][:, :5], expected.keys[layer][:, :5])
        assert torch.equal(cache.values[layer][:, :5], expected.values[layer][:, :5])
    assert tree.match([1, 2, 3, 4, 5, 6]).length == 5
    assert tree.match([7, 1, 2]).length == 0
    assert tree.cached_tokens == 8 and tree.nbytes == 8 * TOKEN_BYTES


def test_copy_into_keeps_what_the_working_cache_already_holds():
    tree = PrefixCache(budget_mib=1)
    tree.insert([1, 2, 3, 4, 5, 6], _computed([1, 2, 3, 4, 5, 6]))
    working = _computed([1, 2, 3])
    found = tree.match([1, 2, 3, 4, 5, 6, 7])
    tree.copy_into(found, working, 3)
    assert working.length == 6
    assert torch.equal(working.keys[1][:, :6], _computed([1, 2, 3, 4, 5, 6]).keys[1][:, :6])


def test_insert_only_stores_computed_positions():
    tree = PrefixCache(budget_mib=1)
    cache = _computed([4, 5, 6])
    tree.insert([4, 5, 6, 7, 8], cache)  # the last two tokens have no KV yet
    assert tree.cached_tokens == 3


def test_least_recently_used_leaves_are_evicted_under_the_budget():
    tree = PrefixCache(budget_mib=9 * TOKEN_BYTES / 2**20)
    tree.insert([1, 2, 3, 4], _computed([1, 2, 3, 4]))
    tree.insert([5, 6, 7, 8], _computed([5, 6, 7, 8]))
    tree.match([1, 2])  # [1, 2] becomes the most recent
    tree.insert([9, 9, 9, 9], _computed([9, 9, 9, 9]))  # 12 tokens > 9: evict the two oldest leaves
    assert tree.nbytes <= tree.budget_bytes
    assert tree.match([5, 6, 7, 8]).length == 0
    assert tree.match([1, 2, 3, 4]).length == 2  # the split-off tail [3, 4] was older than [1, 2]
    assert tree.match([9, 9, 9, 9]).length == 4
    assert tree.stats.evicted_tokens == 6


def test_pinned_nodes_survive_eviction_until_unpinned():
    tree = PrefixCache(budget_mib=4 * TOKEN_BYTES / 2**20)
    tree.insert([1, 2, 3, 4], _computed([1, 2, 3, 4]))
    in_use = tree.match([1, 2, 3, 4])
    tree.pin(in_use)
    tree.insert([5, 6], _computed([5, 6]))
    assert tree.match([1, 2, 3, 4]).length == 4 and tree.match([5, 6]).length == 0
    tree.unpin(in_use)
    tree.insert([5, 6], _computed([5, 6]))
    assert tree.match([1, 2, 3, 4]).length == 0 and tree.match([5, 6]).length == 2


def test_hits_are_counted():
    tree = PrefixCache(budget_mib=1)
    tree.insert([1, 2, 3], _computed([1, 2, 3]))
    tree.match([1, 2, 3, 4])
    tree.match([8])
    assert (tree.stats.lookups, tree.stats.hits, tree.stats.tokens_looked_up, tree.stats.tokens_matched) == (2, 1, 5, 3)


def _edits(tokenizer) -> list[list[int]]:
    """Keystroke-like prompts: the same file typed further, an edit in the middle, a return to an
    earlier file state, and a second file."""
    head = "import os\nimport sys\n\nclass Point:\n    def __init__(self, x, y):\n        self.x = x\n"
    texts = [head + "        self", head + "        self.y", head + "        self.y = y\n",
             head.replace("Point", "Pair") + "        self.y = y\n", head + "        self",
             "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i"]
    return [tokenizer.encode(t) for t in texts]


@pytest.mark.parametrize("variant", ["qwen2", "qwen3_moe", "qwen3_next"])
def test_results_with_the_cache_equal_results_without_it(tiny_model_dir, variant):
    lm = load_model(tiny_model_dir(variant))
    config = GenerationConfig(max_new_tokens=12, stop_ids=frozenset())
    plain = Engine(lm.model, lm.tokenizer, reuse_prefix=False, speculation=SpeculationConfig(ngram=False))
    cached = Engine(lm.model, lm.tokenizer, prefix_cache_mib=64, speculation=SpeculationConfig(ngram=False))
    served = []
    for ids in _edits(lm.tokenizer):
        expected = plain.generate(ids, config)
        got = cached.generate(ids, config)
        assert got.token_ids == expected.token_ids
        served.append(got.timings["reused_prompt_tokens"])
    assert served[1] > 0 and served[2] > 0
    assert served[4] == len(_edits(lm.tokenizer)[4]) - 1  # an earlier state comes back whole from the tree
    assert cached.prefix_cache.stats.hits >= 4


def test_retokenised_edit_point_still_reuses_the_token_prefix(tiny_model_dir):
    """Typing one more character changes the last token; every token before it is still reused."""
    lm = load_model(tiny_model_dir("qwen2"))
    engine = Engine(lm.model, lm.tokenizer, prefix_cache_mib=64)
    before = lm.tokenizer.encode("class Point:\n    def __init__(self, x):\n        sel")
    after = lm.tokenizer.encode("class Point:\n    def __init__(self, x):\n        self")  # "sel" -> "self"
    shared = next(i for i, (a, b) in enumerate(zip(before, after)) if a != b)
    assert before[:shared] == after[:shared] and shared < len(before)
    config = GenerationConfig(max_new_tokens=4, stop_ids=frozenset())
    engine.generate(before, config)
    engine.generate(lm.tokenizer.encode("for i in range(10):"), config)  # takes over the working cache
    result = engine.generate(after, config)
    assert result.timings["reused_prompt_tokens"] == shared
