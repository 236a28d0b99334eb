"""The decode loop: stops, bounds, streaming, cancellation, sampling and prompt-prefix reuse."""

from __future__ import annotations

import pytest
import torch

from inference import GenerationConfig, load_model
from inference.sampling import next_token_distribution


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(tiny_model_dir("qwen2"))


def _prompt(lm):
    return lm.tokenizer.encode("class Point:\n    def __init__(self")


def test_max_new_tokens_bounds_output(lm):
    result = lm.generate(_prompt(lm), GenerationConfig(max_new_tokens=5, stop_ids=frozenset()))
    assert len(result.token_ids) == 5 and result.stop_reason == "max_tokens"
    assert result.prompt_tokens == len(_prompt(lm))
    assert result.ttft_ms > 0 and result.decode_tokens_per_s > 0


def test_stop_token_ends_generation_and_is_not_emitted(lm):
    free = lm.generate(_prompt(lm), GenerationConfig(max_new_tokens=12, stop_ids=frozenset()))
    stop_at = free.token_ids[4]
    first = free.token_ids.index(stop_at)
    stopped = lm.generate(_prompt(lm), GenerationConfig(max_new_tokens=12, stop_ids=frozenset({stop_at})))
    assert stopped.stop_reason == "stop_token"
    assert stopped.token_ids == free.token_ids[:first]


def test_qwen_control_tokens_are_default_stops(lm):
    for token in ("<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                  "<|repo_name|>", "<|file_sep|>", "<|im_end|>"):
        assert lm.tokenizer.token_id(token) in lm.tokenizer.stop_ids


def test_stop_string_truncates_text(lm):
    free = lm.generate(_prompt(lm), GenerationConfig(max_new_tokens=16, stop_ids=frozenset()))
    marker = free.text[3:6]
    assert marker
    cut = lm.generate(_prompt(lm), GenerationConfig(max_new_tokens=16, stop_ids=frozenset(), stop_strings=(marker,)))
    assert cut.stop_reason == "stop_string"
    assert cut.text == free.text[: free.text.find(marker)]


def test_streamed_pieces_form_the_text(lm):
    pieces = []
    result = lm.generate(_prompt(lm), GenerationConfig(max_new_tokens=20, stop_ids=frozenset()),
                         on_token=lambda token, piece: pieces.append((token, piece)))
    assert [t for t, _ in pieces] == result.token_ids
    assert "".join(p for _, p in pieces) == result.text == lm.tokenizer.decode(result.token_ids)


def test_cancellation_is_checked_between_tokens(lm):
    seen = []
    result = lm.generate(_prompt(lm), GenerationConfig(max_new_tokens=50, stop_ids=frozenset()),
                         on_token=lambda t, p: seen.append(t), should_stop=lambda: len(seen) >= 3)
    assert result.stop_reason == "cancelled" and len(result.token_ids) == 3


def test_cancelled_before_prefill_returns_nothing(lm):
    result = lm.generate(_prompt(lm), GenerationConfig(max_new_tokens=5), should_stop=lambda: True)
    assert result.stop_reason == "cancelled" and result.token_ids == []


def test_reusing_the_cached_prefix_gives_identical_tokens(lm, tiny_model_dir):
    config = GenerationConfig(max_new_tokens=12, stop_ids=frozenset())
    base = _prompt(lm)
    fresh = load_model(tiny_model_dir("qwen2"))
    lm.generate(base + lm.tokenizer.encode(" x"), config)  # leaves a shared prefix in the cache
    reused = lm.generate(base + lm.tokenizer.encode(", y"), config)
    assert reused.timings["reused_prompt_tokens"] >= len(base)
    assert reused.token_ids == fresh.generate(base + lm.tokenizer.encode(", y"), config).token_ids


def test_sampling_is_reproducible_with_a_seed_and_top_k_1_is_greedy(lm):
    sampled = GenerationConfig(max_new_tokens=10, temperature=0.9, seed=7, stop_ids=frozenset())
    assert lm.generate(_prompt(lm), sampled).token_ids == lm.generate(_prompt(lm), sampled).token_ids
    top1 = GenerationConfig(max_new_tokens=10, temperature=0.7, top_k=1, seed=3, stop_ids=frozenset())
    greedy = GenerationConfig(max_new_tokens=10, stop_ids=frozenset())
    assert lm.generate(_prompt(lm), top1).token_ids == lm.generate(_prompt(lm), greedy).token_ids


def test_top_p_and_top_k_filter_the_distribution():
    logits = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])
    probs = next_token_distribution(logits, GenerationConfig(temperature=1.0, top_k=0, top_p=0.8), [])
    full = torch.softmax(logits, -1)
    kept = int((probs > 0).sum())
    assert full[:kept].sum() >= 0.8 > full[: kept - 1].sum()
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
    probs = next_token_distribution(logits, GenerationConfig(temperature=1.0, top_k=2, top_p=1.0), [])
    assert (probs > 0).tolist() == [True, True, False, False, False]


@pytest.mark.parametrize("bad", [
    dict(max_new_tokens=-1), dict(temperature=-0.5), dict(top_p=0.0), dict(top_k=-2), dict(prefill_chunk=0),
])
def test_invalid_generation_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        GenerationConfig(**bad)


def test_bad_prompts_get_clear_errors(lm):
    with pytest.raises(ValueError, match="empty"):
        lm.generate([], GenerationConfig(max_new_tokens=1))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.generate([lm.config.vocab_size + 5], GenerationConfig(max_new_tokens=1))
    with pytest.raises(ValueError, match="context length"):
        lm.generate([1] * 10, GenerationConfig(max_new_tokens=lm.context_length))
    assert lm.generate(_prompt(lm), GenerationConfig(max_new_tokens=2)).prompt_tokens > 0  # still usable


def test_control_token_text_is_literal_unless_parsed(lm):
    text = "x = '<|fim_prefix|>'"
    fim = lm.tokenizer.token_id("<|fim_prefix|>")
    assert fim not in lm.tokenizer.encode(text)
    assert fim in lm.tokenizer.encode(text, parse_special=True)
    assert lm.tokenizer.decode(lm.tokenizer.encode(text)) == text
