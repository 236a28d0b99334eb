"""The fast kernels stay faithful to the exactly dequantized fp32 model on real code (real model tier).

Greedy next-token agreement >= 98% and perplexity within 2% of the reference, over 2,048 tokens
of a fixed code corpus, evaluated in chunks through the KV cache: the fast model in decode-sized
chunks (the calls that round activations to int8 in the native kernels) and in prefill-sized ones
(dequantized tiles: bf16 on CPUs that multiply bf16 in hardware), the reference in long ones.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from inference import linear
from inference.checkpoint import open_checkpoint
from inference.kernels.dequantized import DequantizedLinear
from inference.kernels.native_ggml import FEW_TOKENS
from inference.model import build_model
from inference.quants import dequantize

pytestmark = pytest.mark.real_model

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "code_corpus.txt"
TOKENS, CHUNK = 2048, 256


def _exact_fp32(tensor, compute_dtype):
    if not tensor.is_quantized:
        return None
    return DequantizedLinear(dequantize(tensor.data, tensor.qtype, torch.float32), bf16_batches=False)


def _greedy_and_nll(model, ids: list[int], chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy prediction and negative log-likelihood of the true next token at every position."""
    cache = model.new_cache(len(ids))
    greedy, nll = [], []
    for start in range(0, len(ids), chunk):
        logits = model.forward(torch.tensor(ids[start : start + chunk]), cache)
        greedy.append(logits.argmax(-1))
        log_probs = torch.log_softmax(logits.double(), -1)
        targets = torch.tensor(ids[start + 1 : start + chunk + 1])
        nll.append(-log_probs[: len(targets)].gather(1, targets[:, None]).squeeze(1))
    return torch.cat(greedy)[:-1], torch.cat(nll)


@pytest.fixture(scope="module")
def corpus_ids(real_gguf) -> list[int]:
    tokenizer = open_checkpoint(real_gguf).load_tokenizer()
    ids = tokenizer.encode(CORPUS.read_text(encoding="utf-8"))
    assert len(ids) >= TOKENS
    return ids[:TOKENS]


def test_fast_kernels_match_the_dequantized_reference(real_gguf, corpus_ids, monkeypatch):
    fast_model = build_model(open_checkpoint(real_gguf))
    assert any(type(layer.ffn.gate) is not linear.BlockQuantLinear for layer in fast_model.layers)
    fast = {chunk: _greedy_and_nll(fast_model, corpus_ids, chunk) for chunk in (FEW_TOKENS, CHUNK)}
    del fast_model
    gc.collect()

    monkeypatch.setattr(linear, "KERNELS", [linear._dense, _exact_fp32])
    reference = build_model(open_checkpoint(real_gguf))
    ref_greedy, ref_nll = _greedy_and_nll(reference, corpus_ids, CHUNK)

    for chunk, (fast_greedy, fast_nll) in fast.items():
        agreement = (fast_greedy == ref_greedy).double().mean().item()
        perplexity_ratio = torch.exp(fast_nll.mean() - ref_nll.mean()).item()
        print(f"chunks of {chunk}: greedy agreement {agreement:.4f}, perplexity ratio {perplexity_ratio:.4f}")
        assert agreement >= 0.98, f"chunks of {chunk}: greedy agreement {agreement:.4f}"
        assert abs(perplexity_ratio - 1) <= 0.02, f"chunks of {chunk}: perplexity ratio {perplexity_ratio:.4f}"
