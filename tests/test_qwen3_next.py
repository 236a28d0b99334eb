"""qwen3_next, the hybrid architecture: Gated DeltaNet against transformers over several prefill
chunks and token-by-token decode, the chunked and recurrent delta rules, the layer layout, the
recurrent cache's rewind, prefix-cache snapshots and speculative rollback."""

from __future__ import annotations

import pytest
import torch

from inference import GenerationConfig, load_model
from inference.config import ModelConfig
from inference.engine import Engine, SpeculationConfig
from inference.gated_deltanet import GatedDeltaNet, chunked_delta_rule, recurrent_delta_rule
from inference.generate import generate
from inference.model import Attention
from tiny_models import load_reference


@pytest.fixture(scope="module")
def hf_dir(tiny_model_dir):
    return tiny_model_dir("qwen3_next")


@pytest.fixture(scope="module")
def lm(hf_dir):
    return load_model(hf_dir)


def _ids(lm, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, lm.config.vocab_size, (n,), generator=torch.Generator().manual_seed(seed))


def test_prefill_over_chunks_and_decode_match_transformers_step_by_step(lm, hf_dir):
    """150 prompt tokens (three 64-token chunks of the delta rule), then 8 decode steps, each
    compared with transformers' own cached decode."""
    reference = load_reference(hf_dir)
    ids = _ids(lm, 158)
    cache = lm.model.new_cache()
    with torch.no_grad():
        expected = reference(ids[None, :150], use_cache=True)
        torch.testing.assert_close(lm.model.forward(ids[:150], cache), expected.logits[0], atol=1e-4, rtol=0)
        past = expected.past_key_values
        for position in range(150, 158):
            step = reference(ids[None, position : position + 1], past_key_values=past, use_cache=True)
            past = step.past_key_values
            ours = lm.model.forward(ids[position : position + 1], cache)
            torch.testing.assert_close(ours, step.logits[0], atol=1e-4, rtol=0)
    assert cache.length == 158


def test_prefill_in_pieces_matches_one_pass(lm):
    ids = _ids(lm, 150, seed=2)
    whole = lm.model.forward(ids, lm.model.new_cache())
    cache = lm.model.new_cache()
    cuts = [(0, 11), (11, 12), (12, 13), (13, 90), (90, 91), (91, 150)]
    pieces = [lm.model.forward(ids[a:b], cache) for a, b in cuts]
    torch.testing.assert_close(torch.cat(pieces), whole, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [1, 5, 64, 100, 200])
def test_chunked_and_recurrent_delta_rules_agree(n):
    generator = torch.Generator().manual_seed(n)
    heads, key_dim, value_dim = 3, 8, 12

    def unit(*shape):
        x = torch.randn(*shape, generator=generator)
        return x / x.norm(dim=-1, keepdim=True)

    q, k, v = unit(heads, n, key_dim) / key_dim**0.5, unit(heads, n, key_dim), torch.randn(heads, n, value_dim)
    g, beta = -torch.rand(heads, n, generator=generator), torch.rand(heads, n, generator=generator)
    state = torch.randn(heads, key_dim, value_dim, generator=generator)
    out_r, state_r = recurrent_delta_rule(q, k, v, g, beta, state)
    out_c, state_c = chunked_delta_rule(q, k, v, g, beta, state)
    torch.testing.assert_close(out_c, out_r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state_c, state_r, atol=1e-5, rtol=1e-5)


def test_layer_layout_comes_from_the_config(lm):
    kinds = [type(layer.mixer) for layer in lm.model.layers]  # layer_types: linear, full, linear, full
    assert kinds == [GatedDeltaNet, Attention, GatedDeltaNet, Attention]
    base = dict(model_type="qwen3_next", vocab_size=10, hidden_size=8, num_attention_heads=2, num_hidden_layers=6,
                shared_expert_intermediate_size=4, linear_conv_kernel_dim=4, linear_num_key_heads=1,
                linear_num_value_heads=2, linear_key_head_dim=4, linear_value_head_dim=4, num_experts=2,
                num_experts_per_tok=1, moe_intermediate_size=4, head_dim=16)
    by_interval = ModelConfig.from_hf({**base, "full_attention_interval": 3}, "config.json")
    assert by_interval.layer_types == ("linear_attention", "linear_attention", "full_attention") * 2
    assert by_interval.rotary_dim == 4  # partial_rotary_factor defaults to 0.25
    explicit = ModelConfig.from_hf({**base, "layer_types": ["full_attention"] + ["linear_attention"] * 5},
                                   "config.json")
    assert [explicit.is_linear_attention_layer(i) for i in range(6)] == [False] + [True] * 5


def test_truncate_rebuilds_the_state_inside_the_last_pass_and_falls_back_to_snapshots(lm):
    ids = _ids(lm, 40, seed=3)
    cache = lm.model.new_cache()
    lm.model.forward(ids[:20], cache)
    cache.snapshot()
    lm.model.forward(ids[20:30], cache)
    cache.truncate(26)  # inside the last pass: exact
    assert cache.length == 26
    reference = lm.model.new_cache()
    lm.model.forward(ids[:26], reference)
    for ours, expected in zip(cache.states, reference.states):
        torch.testing.assert_close(ours.recurrent, expected.recurrent, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.conv, expected.conv)
    torch.testing.assert_close(lm.model.forward(ids[26:40], cache), lm.model.forward(ids[26:40], reference),
                               atol=1e-4, rtol=0)
    cache.truncate(15)  # before the last pass, and the only snapshot (20) lies beyond: nothing is kept
    assert cache.length == 0 and not cache.snapshots
    lm.model.forward(ids[:20], cache)
    cache.snapshot()
    lm.model.forward(ids[20:21], cache)
    lm.model.forward(ids[21:22], cache)
    cache.truncate(20)  # before the last pass: the snapshot
    assert cache.length == 20 and list(cache.snapshots) == [20]
    at_20 = lm.model.new_cache()
    lm.model.forward(ids[:20], at_20)
    torch.testing.assert_close(lm.model.forward(ids[20:40], cache), lm.model.forward(ids[20:40], at_20),
                               atol=1e-4, rtol=0)


def test_prefix_cache_resumes_from_the_latest_snapshot_within_the_shared_prefix(lm):
    config = GenerationConfig(max_new_tokens=6, stop_ids=frozenset(), prefill_chunk=16)
    plain = Engine(lm.model, lm.tokenizer, reuse_prefix=False, speculation=SpeculationConfig(ngram=False))
    cached = Engine(lm.model, lm.tokenizer, prefix_cache_mib=64, speculation=SpeculationConfig(ngram=False))
    first = _ids(lm, 70, seed=4).tolist()
    second = first[:53] + _ids(lm, 20, seed=5).tolist()  # shares 53 tokens: resumes at the snapshot at 48
    for ids, reused in ((first, 0), (second, 48), (first, 69)):
        got = cached.generate(ids, config)
        assert got.token_ids == plain.generate(ids, config).token_ids
        assert got.timings["reused_prompt_tokens"] == reused
    tree = cached.prefix_cache
    kv_bytes_per_token = 2 * cached.cache.num_layers * lm.config.num_kv_heads * lm.config.head_dim * 4
    snapshot_bytes = sum(state.nbytes for state in cached.cache.states)
    snapshots = sum(len(node.snapshots) for node in tree._nodes())
    assert snapshots >= 5 and tree.nbytes == tree.cached_tokens * kv_bytes_per_token + snapshots * snapshot_bytes


def test_caller_given_snapshot_points_are_resumed_from(lm):
    """Say the current file starts at 37: an edit after it recomputes from 37, not from 32."""
    config = GenerationConfig(max_new_tokens=4, stop_ids=frozenset(), prefill_chunk=16, snapshot_at=(37,))
    engine = Engine(lm.model, lm.tokenizer, prefix_cache_mib=64, speculation=SpeculationConfig(ngram=False))
    first = _ids(lm, 60, seed=8).tolist()
    engine.generate(first, config)
    edited = first[:45] + _ids(lm, 9, seed=9).tolist()
    assert engine.generate(edited, config).timings["reused_prompt_tokens"] == 37


def test_a_budget_too_small_for_a_snapshot_keeps_nothing(lm):
    config = GenerationConfig(max_new_tokens=4, stop_ids=frozenset(), prefill_chunk=16)
    engine = Engine(lm.model, lm.tokenizer, prefix_cache_mib=1000 / 2**20, speculation=SpeculationConfig(ngram=False))
    ids = _ids(lm, 40, seed=6).tolist()
    engine.generate(ids, config)
    engine.generate(_ids(lm, 10, seed=7).tolist(), config)  # takes over the working cache
    assert engine.prefix_cache.nbytes == 0
    assert engine.generate(ids, config).timings["reused_prompt_tokens"] == 0


class _PartlyRightDrafter:
    """Proposes the plain greedy continuation with every third proposal wrong, so verification
    accepts a part of each draft and the recurrent state must be cut inside the verified pass."""

    def __init__(self, sequence: list[int], vocab: int):
        self.sequence, self.vocab = sequence, vocab

    def propose(self, context, k, config, generator=None):
        from inference.speculative import Draft

        right = self.sequence[len(context) : len(context) + k]
        return Draft([t if i % 3 != 2 else (t + 1) % self.vocab for i, t in enumerate(right)])


def test_speculative_rollback_inside_a_verified_pass_is_exact(lm):
    prompt = lm.tokenizer.encode("class Point:\n    def __init__(self, x, y):\n        self")
    config = GenerationConfig(max_new_tokens=30, stop_ids=frozenset())
    plain = generate(lm.model, lm.tokenizer, prompt, config, lm.model.new_cache())
    drafter = _PartlyRightDrafter(prompt + plain.token_ids, lm.config.vocab_size)
    cache = lm.model.new_cache()
    fast = generate(lm.model, lm.tokenizer, prompt, config, cache, drafter=drafter)
    assert fast.token_ids == plain.token_ids
    assert 0 < fast.timings["accepted_tokens"] < fast.timings["drafted_tokens"]
    assert cache.length == len(prompt) + len(plain.token_ids) - 1
