"""The native GGML-block kernels against the exact dequantized matmul, their build, and a model on them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as QT
from test_kernels import exact_matmul, quantized, relative_error

from inference import linear
from inference.checkpoint import open_checkpoint
from inference.kernels import selection
from inference.kernels.native_build import NativeBuildError, build_library
from inference.kernels.native_ggml import FEW_TOKENS, NativeBlockLinear
from inference.model import build_model
from inference.quants import block_geometry, dequantize

QTYPES = [QT.Q8_0, QT.Q5_0, QT.Q4_K, QT.Q5_K, QT.Q6_K]
# int8 activations (per 32 or 256 values) cost about half a percent of the output's norm.
INT8_ACTIVATION_BOUND = 2e-2
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def quiet_cpus(monkeypatch):
    """Kernel choices are measured here whatever else runs on the machine (see the busy-CPU test)."""
    monkeypatch.setattr(selection, "others_keep_cpus_busy", lambda: False)


def native_kernel(ops, qtype: QT, out_features: int = 37, blocks: int = 3, seed: int = 0):
    tensor = quantized(qtype, out_features, blocks * block_geometry(qtype)[0], seed)
    return tensor, NativeBlockLinear(ops, tensor.data, qtype, *tensor.shape)


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("tokens", [1, 3, FEW_TOKENS, FEW_TOKENS + 1, 70])
def test_native_matmul_matches_the_dequantized_reference(native_ops, qtype, tokens):
    tensor, kernel = native_kernel(native_ops, qtype, seed=tokens)
    x = torch.randn(tokens, tensor.shape[1])
    bound = INT8_ACTIVATION_BOUND if tokens <= FEW_TOKENS else 1e-5
    assert relative_error(kernel(x), exact_matmul(x, tensor)) < bound


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda t: t.name)
def test_bf16_tiles_compute_what_a_bf16_matmul_of_the_weight_computes(native_ops, qtype):
    tensor = quantized(qtype, 300, 3 * block_geometry(qtype)[0], seed=1)
    kernel = NativeBlockLinear(native_ops, tensor.data, qtype, *tensor.shape, bf16_tiles=True)
    kernel.tile_rows = 128  # several tiles, the last one partial
    x = torch.randn(70, tensor.shape[1])
    ours = kernel(x)
    assert ours.dtype == torch.float32
    bf16_matmul = (x.bfloat16() @ dequantize(tensor.data, qtype).bfloat16().t()).double()
    assert relative_error(ours, bf16_matmul) < 1e-3
    assert 1e-4 < relative_error(ours, exact_matmul(x, tensor)) < 1e-2  # rounded, but only as bf16 rounds


def test_bf16_tiles_follow_the_cpu_unless_turned_off(native_ops, monkeypatch):
    from inference.kernels import candidates
    from inference.kernels.cpu_features import cpu_features

    monkeypatch.delenv("QWEN_LSP_BF16_TILES", raising=False)
    assert candidates._native(quantized(QT.Q8_0)).bf16_tiles == cpu_features().native_bf16_matmul
    monkeypatch.setenv("QWEN_LSP_BF16_TILES", "0")
    assert candidates._native(quantized(QT.Q8_0)).bf16_tiles is False


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda t: t.name)
def test_native_rows_decode_the_weight_exactly(native_ops, qtype):
    tensor, kernel = native_kernel(native_ops, qtype)
    ids = torch.tensor([[36, 0], [5, 5]])
    torch.testing.assert_close(kernel.rows(ids), dequantize(tensor.data, qtype)[ids], rtol=0, atol=0)


TILED_SHAPES = [(QT.Q5_0, 896), (QT.Q5_0, 64), (QT.Q5_0, 4864), (QT.Q4_K, 256), (QT.Q4_K, 1536), (QT.Q6_K, 512)]


@pytest.mark.parametrize("qtype,in_features", TILED_SHAPES, ids=lambda v: getattr(v, "name", str(v)))
def test_tiled_weights_compute_what_the_file_blocks_compute(native_ops, qtype, in_features):
    """The tiled copy (tiled_blocks.cpp): the file's bytes and values, each token as if alone."""
    tensor = quantized(qtype, 300, in_features, seed=in_features)
    kernel = NativeBlockLinear(native_ops, tensor.data, qtype, *tensor.shape, tiled=True)
    assert not kernel.reads_checkpoint_in_place and kernel.nbytes == tensor.data.numel()
    ids = torch.tensor([299, 0, 7])
    assert torch.equal(kernel.rows(ids), dequantize(tensor.data, qtype)[ids])
    x = torch.randn(FEW_TOKENS + 3, in_features)
    few = kernel(x[:FEW_TOKENS])
    reference = exact_matmul(x, tensor)
    assert relative_error(few, reference[:FEW_TOKENS]) < INT8_ACTIVATION_BOUND
    assert torch.equal(torch.cat([kernel(x[i : i + 1]) for i in range(FEW_TOKENS)]), few)
    assert relative_error(kernel(x), reference) < 1e-5  # many tokens: dequantized tiles
    if qtype == QT.Q5_0:  # the same int8 rounding as the file kernel (which rounds Q4_K's per 256 values)
        file_kernel = NativeBlockLinear(native_ops, tensor.data, qtype, *tensor.shape)
        assert relative_error(few, file_kernel(x[:FEW_TOKENS]).double()) < 1e-5


def test_only_q5_0_q4_k_and_q6_k_are_tiled(native_ops):
    with pytest.raises(RuntimeError, match="Q5_0, Q4_K or Q6_K weights only"):
        native_ops.tile_pack(quantized(QT.Q8_0, 8, 64).data.reshape(8, -1), int(QT.Q8_0), 64)
    with pytest.raises(RuntimeError, match="raw must be uint8"):  # rows of another width than in_features
        native_ops.tile_pack(quantized(QT.Q5_0, 8, 64).data.reshape(8, -1), int(QT.Q5_0), 96)


def test_native_kernel_reads_the_file_blocks_in_place(native_ops):
    tensor, kernel = native_kernel(native_ops, QT.Q4_K)
    assert kernel.reads_checkpoint_in_place
    assert kernel.raw.data_ptr() == tensor.data.data_ptr() and kernel.nbytes == tensor.data.numel()


def test_a_missing_compiler_fails_the_build_cleanly(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "/bin/false")
    with pytest.raises(NativeBuildError):
        build_library(tmp_path)
    assert not list(tmp_path.glob("*.so"))


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env})


def test_without_a_compiler_the_other_kernels_are_used(tmp_path):
    done = _run_python(
        "import sys; sys.path.insert(0, 'tests')\n"
        "from gguf import GGMLQuantizationType as QT\n"
        "from test_kernels import quantized\n"
        "from inference.kernels.native_build import native_ops\n"
        "from inference.kernels.selection import choose_kernel\n"
        "assert native_ops() is None\n"
        "print(type(choose_kernel(quantized(QT.Q8_0))).__name__)\n",
        CXX="/bin/false", QWEN_LSP_CACHE=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert "native GGML kernels unavailable" in done.stderr
    assert done.stdout.strip() not in ("", "NativeBlockLinear")


@pytest.mark.parametrize("flags", [
    "-mno-avx2 -mno-fma -mno-f16c",  # the plain C++ path, what CPUs without AVX2 run
    "-mno-avx512f",  # the AVX2 path, on CPUs that have AVX-512
    "-mno-avx512vnni -mno-avx512bf16",  # AVX-512 without VNNI (maddubs + madd instead of vpdpbusd/vpdpwssd)
], ids=["portable", "avx2", "avx512-without-vnni"])
def test_each_instruction_set_build_matches_the_reference(flags):
    """The native kernels built for fewer instruction sets than this CPU has (what other CPUs run)."""
    done = _run_python(
        "import sys; sys.path.insert(0, 'tests')\n"
        "import torch\n"
        "from test_native_kernels import QTYPES, native_kernel\n"
        "from test_kernels import exact_matmul, relative_error\n"
        "from inference.kernels.native_build import native_ops\n"
        "ops = native_ops()\n"
        "assert ops is not None\n"
        "for qtype in QTYPES:\n"
        "    for tokens in (1, 5, 12):\n"
        "        tensor, kernel = native_kernel(ops, qtype, seed=tokens)\n"
        "        x = torch.randn(tokens, tensor.shape[1])\n"
        "        assert relative_error(kernel(x), exact_matmul(x, tensor)) < 2e-2, (qtype, tokens)\n"
        "from inference.kernels.native_ggml import NativeBlockLinear\n"
        "from test_kernels import quantized\n"
        "from gguf import GGMLQuantizationType as QT\n"
        "for qtype, tokens in ((QT.Q5_0, 1), (QT.Q5_0, 12), (QT.Q4_K, 1), (QT.Q4_K, 5), (QT.Q6_K, 3)):\n"
        "    tensor = quantized(qtype, 37, 768, seed=tokens)\n"
        "    tiled = NativeBlockLinear(ops, tensor.data, qtype, *tensor.shape, tiled=True)\n"
        "    x = torch.randn(tokens, 768)\n"
        "    assert relative_error(tiled(x), exact_matmul(x, tensor)) < 2e-2, ('tiled', qtype, tokens)\n"
        "from test_split_head import SHAPES, int8_rounded, split_kernel\n"
        "for qtype, in_features in SHAPES:\n"
        "    tensor, kernel = split_kernel(ops, qtype, in_features)\n"
        "    x = torch.randn(5, in_features)\n"
        "    full, greedy = kernel(x), kernel.greedy_logits(x)\n"
        "    assert relative_error(full, int8_rounded(x).double() @ kernel.rows(torch.arange(600)).double().t()) < 1e-6\n"
        "    assert torch.equal(greedy.argmax(-1), full.argmax(-1)), qtype\n"
        "    assert torch.equal(greedy[torch.isfinite(greedy)], full[torch.isfinite(greedy)]), qtype\n",
        CXXFLAGS=flags,
    )
    assert done.returncode == 0, done.stderr


def _decoded_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits at every position, decoding one token at a time (the int8 path)."""
    cache = model.new_cache(len(ids))
    return torch.cat([model.forward(torch.tensor([token]), cache) for token in ids])


@pytest.mark.parametrize("variant", ["qwen2_tied", "qwen3_moe_blocks"])
@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q5_0], ids=lambda t: t.name)
def test_model_on_native_kernels_follows_the_reference(native_ops, tiny_gguf, monkeypatch, tmp_path, variant, qtype):
    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path))
    monkeypatch.setenv("QWEN_LSP_KERNEL", "native-ggml")
    monkeypatch.setattr(selection, "_choices", None)
    monkeypatch.setattr(selection, "few_token_limit", lambda ops, bf16_tiles=False: FEW_TOKENS)  # the paths split as below
    path = tiny_gguf(variant, qtype)
    model = build_model(open_checkpoint(path))
    assert type(model.lm_head) is NativeBlockLinear
    model.kv_dtype = torch.float32  # the kernels alone (the fp16 cache has a test of its own)
    reference = build_model(open_checkpoint(path), kernels=linear.REFERENCE_KERNELS)
    ids = torch.randint(0, model.config.vocab_size, (40,), generator=torch.Generator().manual_seed(0)).tolist()
    # Random tiny weights amplify the ~0.5% per-matmul activation rounding and leave near-ties among
    # their top logits; the real model tier checks greedy agreement on real code.
    ours, theirs = _decoded_logits(model, ids), _decoded_logits(reference, ids)
    assert _relative_errors(ours, theirs).max() < 0.3
    assert (ours.argmax(-1) == theirs.argmax(-1)).double().mean() >= 0.75
    prefill = model.forward(torch.tensor(ids), model.new_cache(len(ids)))
    exact = reference.forward(torch.tensor(ids), reference.new_cache(len(ids)))
    # An expert sees a few of the tokens (the int8 path again); a CPU that multiplies bf16 in hardware
    # takes bf16 tiles and attends in bf16. All round, which the random weights amplify as above.
    if model.config.num_experts or model.lm_head.bf16_tiles:
        assert _relative_errors(prefill, exact).max() < 0.4
    else:  # many tokens at once take the exact path
        torch.testing.assert_close(prefill, exact, rtol=1e-4, atol=1e-4)


def test_quantized_models_keep_fp16_keys_and_values(native_ops, tiny_gguf, monkeypatch, tmp_path):
    """As llama.cpp does: half the cache, for logits that move far less than the weights' rounding moves them."""
    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path))
    monkeypatch.setattr(selection, "_choices", None)
    path = tiny_gguf("qwen2_tied", QT.Q8_0)
    model = build_model(open_checkpoint(path))
    assert model.kv_dtype == torch.float16 and model.new_cache(8).dtype == torch.float16
    assert build_model(open_checkpoint(tiny_gguf("qwen2_tied", QT.F32))).kv_dtype == torch.float32
    # On the exact kernels (the int8 path's activation rounding would amplify any change on random weights).
    exact = build_model(open_checkpoint(path), kernels=linear.REFERENCE_KERNELS)
    assert exact.kv_dtype == torch.float32
    ids = torch.randint(0, model.config.vocab_size, (40,), generator=torch.Generator().manual_seed(0)).tolist()
    full = _decoded_logits(exact, ids)
    exact.kv_dtype = torch.float16
    half = _decoded_logits(exact, ids)
    assert _relative_errors(half, full).max() < 1e-2  # the int8 path vs exact: up to 0.3 (above)
    assert (half.argmax(-1) == full.argmax(-1)).double().mean() >= 0.95


def test_verification_passes_stay_on_the_int8_path(native_ops, tiny_gguf, monkeypatch, tmp_path):
    from inference.generate import generate
    from inference.sampling import GenerationConfig
    from inference.speculative import NgramDrafter

    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path))
    monkeypatch.setenv("QWEN_LSP_KERNEL", "native-ggml")
    monkeypatch.setattr(selection, "_choices", None)
    monkeypatch.setattr(selection, "few_token_limit", lambda ops, bf16_tiles=False: 4)
    checkpoint = open_checkpoint(tiny_gguf("qwen2_tied", QT.Q8_0))
    model = build_model(checkpoint)
    assert model.exact_pass_tokens == 4
    asked = []

    class RecordingDrafter(NgramDrafter):
        def propose(self, context, k, config=None, generator=None):
            asked.append(k)
            return super().propose(context, k, config, generator)

    prompt = list(range(5, 15)) * 4  # repeats: the n-grams find long drafts
    config = GenerationConfig(max_new_tokens=24)
    tokenizer = checkpoint.load_tokenizer()
    plain = generate(model, tokenizer, prompt, config, model.new_cache(128))
    drafted = generate(model, tokenizer, prompt, config, model.new_cache(128), drafter=RecordingDrafter(2, 4))
    assert asked and max(asked) <= 3  # passes of at most 4 tokens: the int8 path, as decoding
    assert drafted.token_ids == plain.token_ids


def test_few_token_limit_is_measured_once_per_cpu_and_cached(native_ops, monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path))
    monkeypatch.setattr(selection, "_choices", None)
    measured = []
    measure = selection._measure_few_token_limit
    monkeypatch.setattr(selection, "_measure_few_token_limit",
                        lambda ops, bf16_tiles: measured.append(1) or measure(ops, bf16_tiles))
    limit = selection.few_token_limit(native_ops)
    assert limit in selection.FEW_TOKEN_STEPS
    assert selection.few_token_limit(native_ops) == limit
    monkeypatch.setattr(selection, "_choices", None)  # a later process reads it from the file
    assert selection.few_token_limit(native_ops) == limit and measured == [1]


def test_chosen_native_kernels_take_the_cached_limit(native_ops, monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path))
    monkeypatch.setenv("QWEN_LSP_KERNEL", "native-ggml")
    monkeypatch.setattr(selection, "_choices", {"native-ggml:few-tokens": "24", "native-ggml:few-tokens:bf16": "24"})
    monkeypatch.setattr(selection, "_save_choices", lambda choices: None)
    kernel = selection.choose_kernel(quantized(QT.Q8_0))
    assert type(kernel) is NativeBlockLinear and kernel.few_tokens == 24
    calls = []
    def tiled(rows):
        calls.append(rows.shape[0])
        return torch.zeros(rows.shape[0], kernel.out_features)

    monkeypatch.setattr(kernel, "tiled_matmul", tiled)
    kernel(torch.randn(24, kernel.in_features))
    assert calls == []
    kernel(torch.randn(25, kernel.in_features))
    assert calls == [25]


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda t: t.name)
def test_int8_path_gives_each_row_what_it_gives_that_row_alone(native_ops, qtype):
    """Up to its limit a pass's rows don't depend on how many rows it holds: a verification pass of
    17 rows computes what 17 one-token decode steps would."""
    tensor = quantized(qtype, 37, 3 * block_geometry(qtype)[0], seed=1)
    kernel = NativeBlockLinear(native_ops, tensor.data, qtype, *tensor.shape, few_tokens=24)
    x = torch.randn(17, tensor.shape[1])
    alone = torch.cat([kernel(x[i : i + 1]) for i in range(17)])
    torch.testing.assert_close(kernel(x), alone, rtol=0, atol=0)


@pytest.mark.parametrize("prefix", [20, 100])
def test_a_verification_pass_computes_what_decoding_each_token_computes(native_ops, tiny_gguf, monkeypatch,
                                                                         tmp_path, prefix):
    """Bit for bit, on a dense model: row-independent int8 matmuls and query-by-query attention."""
    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path))
    monkeypatch.setenv("QWEN_LSP_KERNEL", "native-ggml")
    monkeypatch.setattr(selection, "_choices", None)
    monkeypatch.setattr(selection, "few_token_limit", lambda ops, bf16_tiles=False: 32)
    model = build_model(open_checkpoint(tiny_gguf("qwen2_tied", QT.Q8_0)))
    ids = torch.randint(0, model.config.vocab_size, (prefix + 17,), generator=torch.Generator().manual_seed(prefix))
    decoded, verified = model.new_cache(), model.new_cache()
    model.forward(ids[:prefix], decoded), model.forward(ids[:prefix], verified)
    one_by_one = torch.cat([model.forward(ids[i : i + 1], decoded) for i in range(prefix, prefix + 17)])
    torch.testing.assert_close(model.forward(ids[prefix:], verified), one_by_one, rtol=0, atol=0)


def _relative_errors(ours: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return (ours - reference).norm(dim=-1) / reference.norm(dim=-1)


def _stacked_experts(ops, qtype: QT, experts: int, out_features: int, in_features: int, seed: int):
    """Per-expert kernels viewing one stacked tensor, as a GGUF stores a layer's experts."""
    stacked = quantized(qtype, experts * out_features, in_features, seed).data.view(experts, out_features, -1)
    return [NativeBlockLinear(ops, stacked[e], qtype, out_features, in_features) for e in range(experts)]


@pytest.mark.parametrize("router_type", [None, QT.Q8_0], ids=["f32-router", "q8_0-router"])
@pytest.mark.parametrize("normalize", [True, False])
def test_moe_decode_routes_and_runs_the_experts_as_tensor_code_does(native_ops, router_type, normalize):
    from inference.kernels.native_experts import NativeExperts
    from inference.linear import DenseLinear

    experts, top_k = 16, 4
    gates, ups = _stacked_experts(native_ops, QT.Q4_K, experts, 64, 512, 0), _stacked_experts(native_ops, QT.Q8_0, experts, 64, 512, 1)
    downs = _stacked_experts(native_ops, QT.Q5_0, experts, 512, 64, 2)
    if router_type is None:
        router = DenseLinear(torch.randn(experts, 512, generator=torch.Generator().manual_seed(3)), torch.float32)
    else:
        router = native_kernel(native_ops, router_type, experts, 512 // 32, seed=3)[1]
    stack = NativeExperts.from_kernels(router, gates, ups, downs)
    for seed in range(4):
        x = torch.randn(1, 512, generator=torch.Generator().manual_seed(10 + seed))
        weights, chosen = torch.topk(torch.softmax(router(x).float(), dim=-1)[0], top_k)
        if normalize:
            weights = weights / weights.sum()
        reference = sum(w * downs[e](torch.nn.functional.silu(gates[e](x)) * ups[e](x))
                        for e, w in zip(chosen.tolist(), weights.tolist()))
        # The same int8 rounding in one call instead of a router call, softmax, top-k and 3 calls per expert.
        assert relative_error(stack.decode(x, top_k, normalize), reference.double()) < 1e-3


def test_native_experts_need_a_stacked_layout(native_ops):
    from inference.kernels.native_experts import NativeExperts

    router = native_kernel(native_ops, QT.Q8_0, 4, 512 // 32, seed=3)[1]
    gates = _stacked_experts(native_ops, QT.Q8_0, 4, 64, 512, 0)
    downs = _stacked_experts(native_ops, QT.Q8_0, 4, 512, 64, 2)
    assert NativeExperts.from_kernels(router, gates, gates, downs) is not None
    apart = [native_kernel(native_ops, QT.Q8_0, 64, 512 // 32, seed=e)[1] for e in range(4)]  # separate tensors
    assert NativeExperts.from_kernels(router, apart, gates, downs) is None


def test_grouped_native_call_matches_the_kernels_one_by_one(native_ops):
    from inference.kernels.native_ggml import native_group

    kernels = [native_kernel(native_ops, qtype, rows, 512 // block_geometry(qtype)[0], seed)[1]
               for qtype, rows, seed in [(QT.Q4_K, 40, 1), (QT.Q8_0, 8, 2), (QT.Q6_K, 24, 3)]]
    x = torch.randn(5, 512)
    for ours, one in zip(native_group(kernels)(x), kernels):
        torch.testing.assert_close(ours, one(x), rtol=0, atol=0)
