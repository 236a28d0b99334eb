"""Speculative decoding: drafters, adaptive length, greedy exactness on tiny random models of each
architecture (n-gram and draft model), and a statistical test that rejection sampling keeps the
target's distribution."""

from __future__ import annotations

import pytest
import torch

from inference import GenerationConfig, load_model
from inference.engine import Engine, SpeculationConfig
from inference.sampling import next_token_distribution
from inference.speculative import Draft, DraftLength, NgramDrafter, verify_greedy, verify_sampling

REPETITIVE = ("class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n"
              "class Pair:\n    def __init__(self, x, y):\n        self.x = x\n        self")


def test_ngram_drafter_proposes_what_followed_the_latest_occurrence():
    drafter = NgramDrafter(min_ngram=2, max_ngram=3)
    context = [1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 8, 0, 2, 3]
    assert drafter.propose(context, 3).tokens == [7, 8, 0]  # latest "2 3" is followed by 7 8 0
    assert drafter.propose(context + [7, 8], 2).tokens == [0, 2]  # "3 7 8" seen at 8..10
    assert drafter.propose([5, 6, 7], 4).tokens == []


def test_ngram_drafter_by_default_trusts_the_longest_match_of_three_tokens_or_more():
    drafter = NgramDrafter()
    context = [1, 2, 3, 4, 5, 6, 40, 41, 9, 4, 5, 6, 50, 51, 8, 2, 3, 4, 5, 6]
    # "4 5 6" last came before 50 51, but the five tokens "2 3 4 5 6" match where 40 41 followed
    assert drafter.propose(context, 2).tokens == [40, 41]
    assert NgramDrafter().propose([7, 8, 1, 7, 8], 2).tokens == []  # a 2-token match is not enough


def test_ngram_drafts_end_before_a_token_that_ends_generation():
    stop = 99  # e.g. <|file_sep|> after the copied file's last line
    context = [1, 2, 3, 4, stop, 5, 6, 1, 2, 3]
    assert NgramDrafter(stop_ids=frozenset({stop})).propose(context, 5).tokens == [4]
    assert NgramDrafter().propose(context, 5).tokens == [4, stop, 5, 6, 1]
    assert NgramDrafter(stop_ids=frozenset({stop})).propose(context + [4], 5).tokens == []


def test_ngram_index_follows_the_context_across_requests():
    drafter = NgramDrafter()
    first = [1, 2, 3, 4, 5, 6, 7, 1, 2, 3]
    assert drafter.propose(first, 3).tokens == [4, 5, 6]
    assert drafter.propose(first + [4, 5, 6], 3).tokens == [7, 1, 2]
    # The next request shares the first five tokens: what followed "1 2 3" and "4 5 6" in the
    # last context's tail must neither leak into proposals nor hide the earlier occurrences.
    second = [1, 2, 3, 4, 5, 9, 9, 1, 2, 3]
    assert drafter.propose(second, 3).tokens == [4, 5, 9]
    assert drafter.propose(second + [4, 5], 2).tokens == [9, 9]
    shorter = [1, 2, 3, 8, 1, 2, 3]  # shorter than the context indexed
    assert drafter.propose(shorter, 2).tokens == [8, 1]
    for context in ([5, 5, 5, 5], [int(t) for t in torch.randint(0, 50, (300,))], first + [4, 5, 6]):
        fresh = NgramDrafter()
        assert drafter.propose(context, 4).tokens == fresh.propose(context, 4).tokens
        assert drafter._followers == fresh._followers  # exactly the index of this context, nothing stale


def test_draft_length_follows_acceptance():
    length = DraftLength(initial=4, minimum=1, maximum=8)
    for _ in range(6):
        length.update(8, 8)
    assert length.current == 8  # everything accepted: as long as allowed
    for _ in range(6):
        length.update(8, 0)
    assert length.current == 1  # nothing accepted: as short as allowed


def test_draft_length_stops_drafting_while_drafts_fail_and_tries_again_later():
    length = DraftLength(initial=4, minimum=0, maximum=8)
    for _ in range(4):
        length.observe(0, 0.0, 1.0)
        length.observe(2, 0.0, 1.6)  # each row adds 0.3 of a pass (compute-bound)
        length.update(2, 0)
    assert length.current == 0
    steps = 0
    while length.current == 0 and steps < 1000:
        length.update(0, 0)  # a step without drafts
        steps += 1
    assert 1 < steps < 1000 and length.current >= 1


def test_draft_length_weighs_the_cost_of_each_verified_row():
    cheap, dear = DraftLength(maximum=16), DraftLength(maximum=16)
    for length, extra_row_s in ((cheap, 0.05), (dear, 0.5)):
        for _ in range(8):
            length.observe(0, 0.0, 1.0)  # a one-row pass: 1 s
            length.observe(4, 0.0, 1.0 + 4 * extra_row_s)  # a pass verifying 4 drafts
            length.update(4, 3)
    assert abs(dear.row_s - 0.5) < 1e-6 and abs(cheap.row_s - 0.05) < 1e-6
    assert dear.current < cheap.current
    # The chosen length is the best one by the model's own estimate.
    assert all(dear.expected_tokens_per_s(dear.current) >= dear.expected_tokens_per_s(k) for k in range(1, 17))


def test_draft_length_counts_drafting_time():
    free, costly = DraftLength(maximum=16), DraftLength(maximum=16)
    for length, drafting_s in ((free, 0.0), (costly, 0.4)):
        for _ in range(8):
            length.observe(0, 0.0, 1.0)
            length.observe(4, 4 * drafting_s, 1.2)
            length.update(4, 3)
    assert costly.current < free.current


def test_verify_greedy_accepts_the_matching_prefix_and_corrects():
    logits = torch.full((4, 6), -1.0)
    for row, best in enumerate([3, 5, 2, 1]):
        logits[row, best] = 1.0
    assert verify_greedy(logits, [3, 5, 0]) == (2, 2)
    assert verify_greedy(logits, [3, 5, 2]) == (3, 1)
    assert verify_greedy(logits, [4, 5, 2]) == (0, 3)


def _engines(lm, speculation):
    plain = Engine(lm.model, lm.tokenizer, reuse_prefix=False, speculation=SpeculationConfig(ngram=False))
    fast = Engine(lm.model, lm.tokenizer, reuse_prefix=False, speculation=speculation)
    return plain, fast


@pytest.mark.parametrize("variant", ["qwen2", "qwen3", "qwen3_moe", "qwen3_next"])
def test_ngram_speculation_is_exact_under_greedy(tiny_model_dir, variant):
    lm = load_model(tiny_model_dir(variant))
    plain, fast = _engines(lm, SpeculationConfig(ngram=True, min_ngram=1, max_ngram=3))
    config = GenerationConfig(max_new_tokens=40, stop_ids=frozenset())
    drafted = 0
    for text in (REPETITIVE, REPETITIVE[:60], "for i in range(10):\n    print(i * i)\nfor i in range(10):\n"):
        ids = lm.tokenizer.encode(text)
        expected, got = plain.generate(ids, config), fast.generate(ids, config)
        assert got.token_ids == expected.token_ids
        drafted += got.timings["drafted_tokens"]
    assert drafted > 0


@pytest.mark.parametrize("target, draft", [("qwen2", "qwen2"), ("qwen2", "qwen3"), ("qwen3_moe", "qwen2_tied"),
                                           ("qwen3_next", "qwen3_next")])
def test_draft_model_speculation_is_exact_under_greedy(tiny_model_dir, target, draft):
    lm, small = load_model(tiny_model_dir(target)), load_model(tiny_model_dir(draft))
    plain, fast = _engines(lm, SpeculationConfig(draft_model=small.model, draft_initial=3, draft_max=6))
    config = GenerationConfig(max_new_tokens=24, stop_ids=frozenset())
    for text in (REPETITIVE, "def add(a, b):\n    return"):
        ids = lm.tokenizer.encode(text)
        expected, got = plain.generate(ids, config), fast.generate(ids, config)
        assert got.token_ids == expected.token_ids
        assert got.timings["drafted_tokens"] > 0
        if target == draft:
            assert got.timings["accepted_tokens"] == got.timings["drafted_tokens"]


def test_speculation_respects_stops_and_max_tokens(tiny_model_dir):
    lm = load_model(tiny_model_dir("qwen2"))
    plain, fast = _engines(lm, SpeculationConfig(draft_model=lm.model, draft_initial=8, draft_max=8))
    ids = lm.tokenizer.encode(REPETITIVE)
    free = plain.generate(ids, GenerationConfig(max_new_tokens=20, stop_ids=frozenset()))
    stop = free.token_ids[5]
    for config in (GenerationConfig(max_new_tokens=7, stop_ids=frozenset()),
                   GenerationConfig(max_new_tokens=20, stop_ids=frozenset({stop}))):
        expected, got = plain.generate(ids, config), fast.generate(ids, config)
        assert (got.token_ids, got.stop_reason) == (expected.token_ids, expected.stop_reason)
        assert fast.cache.length <= len(ids) + len(got.token_ids)


def test_sampling_with_speculation_runs_and_is_reproducible(tiny_model_dir):
    lm = load_model(tiny_model_dir("qwen2"))
    _, fast = _engines(lm, SpeculationConfig(draft_model=lm.model))
    config = GenerationConfig(max_new_tokens=16, temperature=0.8, seed=3, stop_ids=frozenset())
    ids = lm.tokenizer.encode(REPETITIVE)
    first, second = fast.generate(ids, config), fast.generate(ids, config)
    assert first.token_ids == second.token_ids and len(first.token_ids) == 16


# A toy "model" on a 4-token vocabulary: next-token logits depend on the previous token only.
VOCAB = 4
TARGET = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 1.5, 0.5, 0.0], [1.0, 1.0, 1.0, 0.5], [-1.0, 0.0, 2.0, 1.0]])
DRAFT = torch.tensor([[0.0, 2.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 3.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
CHI2_DF15_P001 = 37.70  # chi-square critical value, 15 degrees of freedom, p = 0.001


@pytest.mark.parametrize("drafter", ["model", "ngram"])
def test_rejection_sampling_keeps_the_target_distribution(drafter):
    """The first two emitted tokens, over many trials, follow the target's joint distribution."""
    config = GenerationConfig(temperature=0.9, top_k=0, top_p=0.95)
    generator = torch.Generator().manual_seed(0)
    start = 0
    counts = torch.zeros(VOCAB, VOCAB)
    trials = 6000
    for _ in range(trials):
        if drafter == "model":
            tokens, probs, prev = [], [], start
            for _ in range(2):
                q = next_token_distribution(DRAFT[prev], config, [])
                prev = int(torch.multinomial(q, 1, generator=generator))
                tokens.append(prev)
                probs.append(q)
            draft = Draft(tokens, probs)
        else:
            draft = Draft([1, 2])  # a fixed guess, as prompt lookup makes
        logits = torch.stack([TARGET[t] for t in [start] + draft.tokens])
        accepted, token = verify_sampling(logits, draft, config, [], generator)
        out = draft.tokens[:accepted] + [token]
        if len(out) < 2:  # the second token comes from the next step, without drafts
            p = next_token_distribution(TARGET[out[0]], config, [])
            out.append(int(torch.multinomial(p, 1, generator=generator)))
        counts[out[0], out[1]] += 1
    first = next_token_distribution(TARGET[start], config, [])
    expected = torch.stack([first[a] * next_token_distribution(TARGET[a], config, []) for a in range(VOCAB)])
    expected = expected * trials
    mask = expected > 0
    assert counts[~mask].sum() == 0
    chi2 = float(((counts[mask] - expected[mask]) ** 2 / expected[mask]).sum())
    assert chi2 < CHI2_DF15_P001


REAL_PROMPT = ("<|fim_prefix|>def area(width, height):\n    return width * height\n\n\n"
               "def area_v2(width, height):\n<|fim_suffix|>\n<|fim_middle|>")


@pytest.fixture(scope="module")
def real_lm(real_gguf):
    return load_model(real_gguf, threads=2)


@pytest.mark.real_model
def test_real_model_speculation_and_prefix_cache_are_exact(real_lm):
    """0.5B: plain decoding, n-gram speculation and a prefix-cache hit give the same tokens."""
    plain = Engine(real_lm.model, real_lm.tokenizer, reuse_prefix=False, speculation=SpeculationConfig(ngram=False))
    fast = Engine(real_lm.model, real_lm.tokenizer)  # prefix cache and prompt lookup, the defaults
    ids = real_lm.tokenizer.encode(REAL_PROMPT, parse_special=True)
    config = GenerationConfig(max_new_tokens=10)
    expected = plain.generate(ids, config)
    got = fast.generate(ids, config)
    again = fast.generate(ids, config)
    assert got.token_ids == expected.token_ids == again.token_ids
    assert got.timings["accepted_tokens"] > 0
    assert again.timings["reused_prompt_tokens"] == len(ids) - 1


@pytest.mark.real_model
def test_real_draft_model_is_exact(real_lm):
    """0.5B drafting for 1.5B (skipped when the 1.5B is not in the model store)."""
    from inference.errors import ModelNotFoundError
    from inference.model_store import resolve_model

    try:
        target = load_model(resolve_model("qwen2.5-coder-1.5b", fetch=False), threads=2)
    except ModelNotFoundError as exc:
        pytest.skip(f"no 1.5B model: {exc}")
    plain, fast = _engines(target, SpeculationConfig(draft_model=real_lm.model, draft_initial=4, draft_max=4))
    ids = target.tokenizer.encode(REAL_PROMPT, parse_special=True)
    config = GenerationConfig(max_new_tokens=8)
    got, expected = fast.generate(ids, config), plain.generate(ids, config)
    assert got.token_ids == expected.token_ids and got.timings["drafted_tokens"] > 0
