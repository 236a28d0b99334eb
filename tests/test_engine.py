"""The engine: preemption by request key (counted in tokens), time budgets, streaming to asyncio
callers, thread safety, and bounded memory."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from inference import GenerationConfig, load_model
from inference.engine import Engine, SpeculationConfig

PROMPTS = ["class Point:\n    def __init__(self", "def add(a, b):\n    return", "for i in range(10):\n",
           "import os\nimport sys\n\nif __name__ == '__main__':\n", "fn main() { let v"]
FREE = GenerationConfig(max_new_tokens=24, stop_ids=frozenset())


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(tiny_model_dir("qwen2"))


def _plain(lm, **kwargs) -> Engine:
    return Engine(lm.model, lm.tokenizer, speculation=SpeculationConfig(ngram=False), **kwargs)


def test_a_newer_request_for_the_same_document_preempts_at_the_next_token(lm):
    engine = _plain(lm)
    seen, newer = [], []

    def on_token(token, piece):
        seen.append(token)
        if len(seen) == 3:
            newer.append(engine.submit(lm.tokenizer.encode(PROMPTS[1]), FREE, request_key="doc.py"))

    stale = engine.submit(lm.tokenizer.encode(PROMPTS[0]), FREE, request_key="doc.py", on_token=on_token)
    result = stale.result(timeout=60)
    assert result.stop_reason == "cancelled" and len(result.token_ids) == 3
    assert newer[0].result(timeout=60).stop_reason == "max_tokens"
    engine.close()


def test_speculative_requests_are_preempted_within_one_verify_step(lm):
    engine = Engine(lm.model, lm.tokenizer, speculation=SpeculationConfig(draft_model=lm.model, draft_initial=4,
                                                                         draft_max=4))
    seen = []

    def on_token(token, piece):
        seen.append(token)
        if len(seen) == 1:
            engine.submit(lm.tokenizer.encode(PROMPTS[1]), FREE, request_key="doc.py")

    result = engine.submit(lm.tokenizer.encode(PROMPTS[0]), FREE, request_key="doc.py",
                           on_token=on_token).result(timeout=60)
    assert result.stop_reason == "cancelled" and len(result.token_ids) <= 1 + 5  # one step: 4 drafts + 1
    engine.close()


def test_other_documents_are_not_preempted_and_queued_stale_requests_never_start(lm):
    engine = _plain(lm)
    gate = threading.Event()
    blocker = engine.submit(lm.tokenizer.encode(PROMPTS[2]), FREE, on_token=lambda t, p: gate.wait(5))
    queued = [engine.submit(lm.tokenizer.encode(p), FREE, request_key="a.py") for p in PROMPTS[:3]]
    other = engine.submit(lm.tokenizer.encode(PROMPTS[3]), FREE, request_key="b.py")
    gate.set()
    assert blocker.result(timeout=60).stop_reason == "max_tokens"
    results = [f.result(timeout=60) for f in queued]
    assert [r.stop_reason for r in results] == ["cancelled", "cancelled", "max_tokens"]
    assert results[0].token_ids == [] and results[0].ttft_ms is None
    assert other.result(timeout=60).stop_reason == "max_tokens"
    engine.close()


def test_an_explicit_should_stop_still_cancels(lm):
    engine = _plain(lm)
    seen = []
    result = engine.generate(lm.tokenizer.encode(PROMPTS[0]), FREE, on_token=lambda t, p: seen.append(t),
                             should_stop=lambda: len(seen) >= 2, request_key="doc.py")
    assert result.stop_reason == "cancelled" and len(result.token_ids) == 2


def test_a_spent_time_budget_stops_at_the_next_newline_after_some_text(lm):
    engine = _plain(lm)
    checked = 0
    for prompt in PROMPTS:
        ids = lm.tokenizer.encode(prompt)
        free = engine.generate(ids, GenerationConfig(max_new_tokens=48, stop_ids=frozenset()))
        pieces = [lm.tokenizer.decode(free.token_ids[: i + 1]) for i in range(len(free.token_ids))]
        first_newline = next((i for i, text in enumerate(pieces) if "\n" in text[len(pieces[i - 1]) if i else 0:]
                              and text.strip()), None)
        if first_newline is None:
            continue
        budgeted = engine.generate(ids, GenerationConfig(max_new_tokens=48, stop_ids=frozenset()), time_budget_ms=0)
        assert budgeted.stop_reason == "time_budget"
        assert budgeted.token_ids == free.token_ids[: first_newline + 1]
        checked += 1
    assert checked > 0


def _long_prompt(lm, tokens: int) -> list[int]:
    words = lm.tokenizer.encode(" ".join(PROMPTS))
    return (words * (tokens // len(words) + 1))[:tokens]


def test_cancelling_during_the_prefill_stops_within_one_chunk_and_keeps_the_chunks_done(lm):
    engine = _plain(lm)
    chunked = GenerationConfig(max_new_tokens=8, stop_ids=frozenset(), prefill_chunk=32)
    ids = _long_prompt(lm, 300)
    # cancelled once two chunks are in: the prefill stops at the next chunk boundary
    cancelled = engine.generate(ids, chunked, should_stop=lambda: engine.cache.length >= 2 * 32)
    assert cancelled.stop_reason == "cancelled" and cancelled.token_ids == []
    hits = engine.prefix_cache.stats.hits
    again = engine.generate(ids, chunked)
    assert again.timings["reused_prompt_tokens"] == 2 * 32
    assert engine.prefix_cache.stats.hits == hits + 1
    assert again.token_ids == _plain(lm, reuse_prefix=False).generate(ids, chunked).token_ids


def test_a_time_budget_spent_during_the_prefill_still_answers_the_first_line(lm):
    engine = _plain(lm)
    chunked = GenerationConfig(max_new_tokens=8, stop_ids=frozenset(), prefill_chunk=32)
    ids = _long_prompt(lm, 300)
    free = _plain(lm, reuse_prefix=False).generate(ids, chunked)
    spent = engine.generate(ids, chunked, time_budget_ms=0)
    assert spent.token_ids and spent.token_ids == free.token_ids[: len(spent.token_ids)]
    assert spent.stop_reason == "time_budget" or spent.token_ids == free.token_ids
    assert "\n" not in lm.tokenizer.decode(spent.token_ids).strip()
    again = engine.generate(ids, chunked)
    assert again.timings["reused_prompt_tokens"] == len(ids) - 1  # the whole prompt was computed
def test_async_callers_get_streamed_tokens_and_the_result(lm):
    engine = Engine(lm.model, lm.tokenizer)

    async def complete():
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        result = await engine.generate_async(
            lm.tokenizer.encode(PROMPTS[0]), FREE, request_key="doc.py",
            on_token=lambda token, piece: loop.call_soon_threadsafe(pieces.put_nowait, piece))
        await asyncio.sleep(0)
        streamed = []
        while not pieces.empty():
            streamed.append(pieces.get_nowait())
        return result, "".join(streamed)

    result, streamed = asyncio.run(complete())
    assert streamed == result.text and len(result.token_ids) == FREE.max_new_tokens
    engine.close()


def test_concurrent_callers_get_the_same_results_as_sequential_ones(lm):
    engine = Engine(lm.model, lm.tokenizer, prefix_cache_mib=8)
    expected = {p: _plain(lm, reuse_prefix=False).generate(lm.tokenizer.encode(p), FREE).token_ids for p in PROMPTS}
    got: dict[str, list[int]] = {}

    def call(prompt):
        got[prompt] = engine.generate(lm.tokenizer.encode(prompt), FREE).token_ids

    threads = [threading.Thread(target=call, args=(p,)) for p in PROMPTS * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == expected


def test_memory_stays_bounded_under_a_random_request_pattern(lm):
    budget_mib = 0.1
    engine = Engine(lm.model, lm.tokenizer, max_context=256, prefix_cache_mib=budget_mib)
    rng = random.Random(0)
    words = lm.tokenizer.encode(" ".join(PROMPTS))
    c = lm.config
    full_context_bytes = 2 * c.num_layers * c.num_kv_heads * c.head_dim * 4 * 256
    for _ in range(30):
        ids = [rng.choice(words) for _ in range(rng.randint(2, 200))]
        engine.generate(ids, GenerationConfig(max_new_tokens=rng.randint(1, 40), stop_ids=frozenset()))
        assert engine.prefix_cache.nbytes <= budget_mib * 2**20
        assert engine.cache.nbytes <= full_context_bytes
    assert engine.prefix_cache.stats.evicted_tokens > 0
    assert engine.cache.max_length == 256
