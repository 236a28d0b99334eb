"""The split output head: coarse + residual codes hold the file's weights, full logits are exact, and a
greedy step picks the same token from the coarse plane plus a few rows' residuals."""

from __future__ import annotations

import pytest
import torch
from gguf import GGMLQuantizationType as QT
from test_kernels import quantized

from inference.checkpoint import open_checkpoint
from inference.generate import generate
from inference.kernels import selection, split_head
from inference.kernels.split_head import SplitHeadLinear
from inference.model import build_model
from inference.quants import dequantize
from inference.sampling import GenerationConfig

# (type, in_features): a Q8_0 row ending in a tile of 8 groups, one of a single 4-group tile, Q6_K rows.
SHAPES = [(QT.Q8_0, 896), (QT.Q8_0, 64), (QT.Q6_K, 512)]


def int8_rounded(x: torch.Tensor) -> torch.Tensor:
    """x as the kernel sees it: int8 codes with one scale per 32 values."""
    blocks = x.reshape(x.shape[0], -1, 32)
    scale = blocks.abs().amax(-1, keepdim=True) / 127
    codes = torch.round(blocks * torch.where(scale > 0, 1 / scale, torch.zeros_like(scale)))
    return (codes * scale).reshape(x.shape)


def split_kernel(ops, qtype: QT, in_features: int, rows: int = 600, seed: int = 0):
    tensor = quantized(qtype, rows, in_features, seed)
    return tensor, SplitHeadLinear(ops, tensor.data, qtype, rows, in_features)


@pytest.mark.parametrize("qtype,in_features", SHAPES, ids=lambda v: getattr(v, "name", str(v)))
def test_the_planes_hold_the_files_weights_in_its_bytes(native_ops, qtype, in_features):
    tensor, kernel = split_kernel(native_ops, qtype, in_features)
    assert kernel.nbytes == tensor.data.numel()
    assert kernel.greedy_bytes < 0.71 * kernel.nbytes
    ids = torch.tensor([0, 5, 599, 5])
    assert torch.equal(kernel.rows(ids), dequantize(tensor.data, qtype).float()[ids])


@pytest.mark.parametrize("qtype,in_features", SHAPES, ids=lambda v: getattr(v, "name", str(v)))
def test_full_logits_are_the_exact_product_with_int8_activations(native_ops, qtype, in_features):
    tensor, kernel = split_kernel(native_ops, qtype, in_features, seed=1)
    x = torch.randn(6, in_features)
    reference = int8_rounded(x).double() @ dequantize(tensor.data, qtype).double().t()
    ours = kernel(x)
    assert float((ours.double() - reference).abs().max() / reference.abs().max()) < 1e-5
    for tokens in (1, 2, 3, 5):  # passes of any size compute each token alike
        assert torch.equal(kernel(x[:tokens]), ours[:tokens])


@pytest.mark.parametrize("qtype,in_features", SHAPES, ids=lambda v: getattr(v, "name", str(v)))
def test_a_greedy_step_finds_the_same_largest_logit_from_few_rows(native_ops, qtype, in_features):
    tensor, kernel = split_kernel(native_ops, qtype, in_features, seed=2)
    weights = dequantize(tensor.data, qtype).float()
    x = torch.randn(8, in_features)
    x[1] = 4 * weights[17]  # one clear winner
    x[2] = 4 * weights[40]
    full, greedy = kernel(x), kernel.greedy_logits(x)
    assert torch.equal(greedy.argmax(-1), full.argmax(-1))
    computed = torch.isfinite(greedy)
    assert torch.equal(greedy[computed], full[computed])  # the same exact numbers
    assert (greedy[~computed] == float("-inf")).all()
    assert computed[1].sum() < 0.05 * kernel.out_features  # the coarse bound alone rules out the rest


def test_a_head_packed_in_slices_releases_each_slice_once_packed_and_equals_one_pass(native_ops, monkeypatch):
    tensor, whole = split_kernel(native_ops, QT.Q8_0, 896)
    row_bytes = tensor.data.numel() // 600
    monkeypatch.setattr(split_head, "PACK_SLICE_BYTES", 250 * row_bytes)
    released = []
    sliced = SplitHeadLinear(native_ops, tensor.data, QT.Q8_0, 600, 896,
                             release_slice=lambda rows: released.append(
                                 (rows.data_ptr() - tensor.data.data_ptr()) // row_bytes))
    assert released == [0, 250, 500]
    assert torch.equal(sliced.coarse, whole.coarse) and torch.equal(sliced.residual, whole.residual)


@pytest.mark.parametrize("qtype,in_features", [(QT.Q8_0, 896), (QT.Q6_K, 512)], ids=lambda v: getattr(v, "name", str(v)))
def test_an_unsure_step_computes_few_rows_exactly(native_ops, qtype, in_features):
    """Flat logits leave most rows' coarse bounds within reach of the best lower bound (Q8_0: half to
    four fifths of them); the exact logits of the most promising rows rule out nearly all of those."""
    tensor, kernel = split_kernel(native_ops, qtype, in_features, rows=4000, seed=5)
    x = torch.randn(8, in_features)
    full, greedy = kernel(x), kernel.greedy_logits(x)
    assert torch.equal(greedy.argmax(-1), full.argmax(-1))
    computed = torch.isfinite(greedy)
    assert torch.equal(greedy[computed], full[computed])
    assert (computed.sum(-1) < 0.2 * kernel.out_features).all()


def test_tied_rows_both_stay_candidates_and_the_first_wins(native_ops):
    tensor = quantized(QT.Q8_0, 300, 256, seed=3)
    raw = tensor.data.reshape(300, -1).clone()
    raw[200] = raw[100]  # two identical rows: equal logits
    kernel = SplitHeadLinear(native_ops, raw, QT.Q8_0, 300, 256)
    x = 4 * dequantize(raw[100:101], QT.Q8_0).float()
    greedy = kernel.greedy_logits(x)[0]
    assert greedy[100] == greedy[200] and int(greedy.argmax()) == 100 == int(kernel(x)[0].argmax())


def test_bad_planes_and_types_are_refused(native_ops):
    tensor, kernel = split_kernel(native_ops, QT.Q8_0, 256)
    with pytest.raises(RuntimeError, match="Q8_0 or Q6_K"):
        native_ops.split_head_planes(quantized(QT.Q4_K, 8, 256).data.reshape(8, -1), int(QT.Q4_K), 256)
    with pytest.raises(RuntimeError, match="raw must be uint8"):
        native_ops.split_head_pack_(tensor.data.reshape(600, -1)[:5], kernel.coarse[:4], kernel.residual[:4],
                                    int(QT.Q8_0), 256)
    with pytest.raises(RuntimeError, match="do not hold rows"):
        native_ops.split_head_logits(torch.randn(1, 512), kernel.coarse, kernel.residual, int(QT.Q8_0), True)
    with pytest.raises(RuntimeError, match="out of range"):
        kernel.rows(torch.tensor([600]))


@pytest.mark.parametrize("variant", ["qwen2", "qwen2_tied"])
def test_a_model_with_a_split_head_decodes_greedily_as_its_full_logits_do(native_ops, tiny_gguf, monkeypatch,
                                                                          tmp_path, variant):
    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path))
    monkeypatch.setattr(selection, "_choices", None)
    monkeypatch.setattr(selection, "others_keep_cpus_busy", lambda: False)
    checkpoint = open_checkpoint(tiny_gguf(variant, QT.Q8_0))
    model = build_model(checkpoint)
    assert isinstance(model.lm_head, SplitHeadLinear)
    tokenizer = checkpoint.load_tokenizer()
    ids = torch.randint(0, model.config.vocab_size, (30,), generator=torch.Generator().manual_seed(0)).tolist()
    config = GenerationConfig(max_new_tokens=24, stop_ids=frozenset())
    greedy = generate(model, tokenizer, ids, config, model.new_cache(64))
    # The same decode through full logits: every step's argmax over the exact head.
    cache, token, full = model.new_cache(64), None, []
    logits = model.forward(torch.tensor(ids), cache, last_only=True)[-1]
    for _ in range(len(greedy.token_ids)):
        token = int(logits.argmax())
        full.append(token)
        logits = model.forward(torch.tensor([token]), cache, last_only=True)[-1]
    assert greedy.token_ids == full
