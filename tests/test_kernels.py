"""Each fast kernel against the exact dequantized matmul, on small random GGML blocks."""

from __future__ import annotations

import dataclasses
import mmap
import time

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QT
from test_quants import random_raw

from inference.checkpoint import CheckpointTensor
from inference.kernels import selection
from inference.kernels.candidates import CANDIDATES
from inference.kernels.cpu_features import _cpuinfo_fields
from inference.kernels.dequantized import DequantizedLinear
from inference.kernels.int4_packed import Int4PackedLinear
from inference.kernels.int8_packed import requantize_per_channel
from inference.kernels.page_release import release_file_pages
from inference.linear import LinearKernel
from inference.quants import block_geometry, dequantize, q4_k_scales_mins

OUT, IN = 32, 512  # the smallest shape every kernel accepts


@pytest.fixture(autouse=True)
def quiet_cpus(monkeypatch):
    """Kernel choices are measured here whatever else runs on the machine (see the busy-CPU test)."""
    monkeypatch.setattr(selection, "others_keep_cpus_busy", lambda: False)


def quantized(qtype: QT, out_features: int = OUT, in_features: int = IN, seed: int = 0) -> CheckpointTensor:
    block_values, _ = block_geometry(qtype)
    raw = torch.from_numpy(random_raw(qtype, (out_features,), in_features // block_values, seed))
    return CheckpointTensor("w", (out_features, in_features), raw, qtype)


def exact_matmul(x: torch.Tensor, tensor: CheckpointTensor) -> torch.Tensor:
    return x.double() @ dequantize(tensor.data, tensor.qtype).double().t()


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.double() - reference).norm() / reference.norm())


@pytest.mark.parametrize("tokens", [1, 7])
def test_int4_fp32_reproduces_q4_k(tokens):
    tensor = quantized(QT.Q4_K)
    kernel = Int4PackedLinear(*int4_parts(tensor, torch.float32))
    x = torch.randn(tokens, IN)
    assert relative_error(kernel(x), exact_matmul(x, tensor)) < 1e-5


def test_int4_bf16_stays_within_bf16_rounding():
    tensor = quantized(QT.Q4_K, seed=1)
    kernel = Int4PackedLinear(*int4_parts(tensor, torch.bfloat16))
    x = torch.randn(3, IN)
    assert relative_error(kernel(x), exact_matmul(x, tensor)) < 2e-2


def test_int4_rows_decode_the_weight():
    tensor = quantized(QT.Q4_K, seed=2)
    kernel = Int4PackedLinear(*int4_parts(tensor, torch.float32))
    ids = torch.tensor([0, 5, 31])
    torch.testing.assert_close(kernel.rows(ids), dequantize(tensor.data[ids], QT.Q4_K), rtol=1e-5, atol=1e-5)


def int4_parts(tensor, act_dtype):
    scales, mins, codes = q4_k_scales_mins(tensor.data)
    return codes, scales, mins, act_dtype, tensor.data


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q5_0, QT.Q4_K, QT.Q5_K, QT.Q6_K])
@pytest.mark.parametrize("tokens", [1, 5])
def test_dense_bf16_matches_within_bf16_rounding(qtype, tokens):
    tensor = quantized(qtype)
    kernel = DequantizedLinear(dequantize(tensor.data, qtype, torch.bfloat16), bf16_batches=False)
    x = torch.randn(tokens, IN)
    assert relative_error(kernel(x), exact_matmul(x, tensor)) < 1e-2
    torch.testing.assert_close(kernel.rows(torch.tensor([3])), dequantize(tensor.data[3:4], qtype), rtol=1e-2, atol=1e-2)


def test_per_channel_requantization_bounds_the_error():
    values = torch.randn(8, 64)
    codes, scales = requantize_per_channel(values)
    assert codes.dtype == torch.int8 and codes.abs().max() <= 127
    assert ((codes.float() * scales[:, None] - values).abs() <= scales[:, None] / 2 + 1e-6).all()


@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda c: c.name)
@pytest.mark.parametrize("qtype", [QT.Q4_K, QT.Q6_K, QT.Q8_0])
def test_every_candidate_computes_the_matmul(candidate, qtype):
    tensor = quantized(qtype, seed=3)
    kernel = candidate.build(tensor)
    if kernel is None:
        pytest.skip(f"{candidate.name} does not apply to {qtype.name}")
    x = torch.randn(2, IN)
    bound = 1e-5 if candidate.name == "int4-fp32" else 2e-2 if candidate.exact else 8e-2
    assert relative_error(kernel(x), exact_matmul(x, tensor)) < bound
    assert kernel.nbytes > 0


def test_selection_picks_an_exact_kernel_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path))
    monkeypatch.delenv("QWEN_LSP_LOSSY_KERNELS", raising=False)
    monkeypatch.setattr(selection, "_choices", None)
    tensor = quantized(QT.Q5_0, seed=4)
    kernel = selection.choose_kernel(tensor)
    x = torch.randn(1, IN)
    assert relative_error(kernel(x), exact_matmul(x, tensor)) < 1e-2
    assert (tmp_path / "kernel-choices.json").is_file()
    assert all(c.exact for c in selection.allowed_candidates())


class RowRecordingKernel(LinearKernel):
    """A kernel that notes how many rows each call through it has."""

    def __init__(self, inner: LinearKernel, rows_seen: list[int]):
        self.inner, self.rows_seen = inner, rows_seen
        self.out_features, self.in_features = inner.out_features, inner.in_features
        self.reads_checkpoint_in_place = inner.reads_checkpoint_in_place

    def __call__(self, x):
        self.rows_seen.append(x.shape[0])
        return self.inner(x)

    def rows(self, ids):
        return self.inner.rows(ids)

    @property
    def nbytes(self):
        return self.inner.nbytes


def test_output_head_is_chosen_by_one_token_calls_only(monkeypatch, tmp_path):
    """The head computes one row per prompt: a many-row call must not weigh in on its kernel."""
    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path))
    monkeypatch.setattr(selection, "_choices", None)
    rows_seen: list[int] = []

    def recorded(build):
        return lambda tensor: (lambda kernel: kernel and RowRecordingKernel(kernel, rows_seen))(build(tensor))

    candidates = [dataclasses.replace(c, build=recorded(c.build)) for c in selection.allowed_candidates()]
    monkeypatch.setattr(selection, "allowed_candidates", lambda: candidates)
    tensor = quantized(QT.Q4_K, seed=5)  # a type the split head does not take (test_split_head)
    selection.choose_kernel(dataclasses.replace(tensor, name="output.weight"))
    assert rows_seen and set(rows_seen) == {1}
    selection.choose_kernel(tensor)
    assert selection.BATCH in rows_seen


def test_one_token_calls_cost_at_least_their_bytes_over_the_bandwidth(monkeypatch, tmp_path):
    """Timed alone, a weight stays in the last-level cache; decoding streams every weight from memory."""
    from inference.linear import DenseLinear

    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path))
    monkeypatch.setattr(selection, "_choices", None)
    probes = []
    monkeypatch.setattr(selection, "read_bandwidth_gbs", lambda threads, megabytes: probes.append(1) or 0.5)
    kernel = DenseLinear(torch.randn(256, 256), torch.float32)  # 256 KiB: ~0.5 ms a call at 0.5 GB/s
    floor = (selection.DECODED_TOKENS + 1) * kernel.nbytes / 0.5e9
    assert selection.measured_cost(kernel, prefills=False) >= floor
    assert selection.measured_cost(kernel) >= floor - kernel.nbytes / 0.5e9
    assert len(probes) == 1  # measured once, then cached with the choices
    monkeypatch.setattr(selection, "_choices", None)
    assert selection.memory_bandwidth_gbs() == 0.5 and len(probes) == 1


def test_nothing_is_measured_or_cached_while_other_processes_keep_the_cpus_busy(monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path))
    monkeypatch.setattr(selection, "_choices", None)
    monkeypatch.setattr(selection, "others_keep_cpus_busy", lambda: True)
    monkeypatch.setattr(selection, "measured_cost", lambda *a, **k: pytest.fail("measured on busy CPUs"))
    tensor = quantized(QT.Q4_K)
    kernel = selection.choose_kernel(tensor)
    assert kernel.nbytes == tensor.data.numel()  # the file's bytes (in place or tiled), no larger copy
    assert selection._load_choices() == {} and not (tmp_path / "kernel-choices.json").exists()


@pytest.mark.parametrize("others_share, busy", [(0.0, False), (0.1, False), (0.5, True)])
def test_busy_cpus_count_other_processes_time_only(monkeypatch, others_share, busy):
    import os

    from inference.kernels import cpu_load

    window = 0.01
    capacity = window * os.sysconf("SC_CLK_TCK") * os.cpu_count()
    own = iter([1000, 1000 + 5 * capacity])  # this process: five CPUs' worth, which never counts
    total = iter([5000, 5000 + 5 * capacity + others_share * capacity])
    monkeypatch.setattr(cpu_load, "_own_ticks", lambda: next(own))
    monkeypatch.setattr(cpu_load, "_busy_ticks", lambda: next(total))
    monkeypatch.setattr(cpu_load, "_last", None)
    assert cpu_load.others_keep_cpus_busy(window) is busy
    assert cpu_load.others_keep_cpus_busy(window) is busy  # remembered: the readers are not asked again


def test_cpu_time_readers_see_this_process():
    from inference.kernels import cpu_load

    started = time.monotonic()
    while time.monotonic() - started < 0.05:
        pass
    assert 0 < cpu_load._own_ticks() <= cpu_load._busy_ticks()


def test_forced_kernel_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN_LSP_CACHE", str(tmp_path))
    monkeypatch.setenv("QWEN_LSP_KERNEL", "dense-bf16")
    monkeypatch.setattr(selection, "_choices", None)
    assert isinstance(selection.choose_kernel(quantized(QT.Q4_K)), DequantizedLinear)


def test_released_file_pages_read_back_unchanged(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 5 * mmap.PAGESIZE + 123, dtype=np.uint8)
    path = tmp_path / "blob"
    data.tofile(path)
    mapped = torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="c"))
    release_file_pages(mapped[100:])
    assert torch.equal(mapped, torch.from_numpy(data))


def test_cpuinfo_flags_are_parsed():
    flags, model = _cpuinfo_fields("processor: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_tile\n")
    assert model == "Some CPU" and {"avx2", "amx_tile"} <= flags
