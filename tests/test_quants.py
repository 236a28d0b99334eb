"""inference.quants against gguf-py's numpy reference dequantization."""

from __future__ import annotations

import warnings

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QT

from inference import quants
from inference.quants import (
    SUPPORTED_QTYPES,
    UnsupportedQuantError,
    block_geometry,
    dequantize,
    q4_k_scales_mins,
    q5_0_scales,
    q5_k_scales_mins,
    q6_k_scales,
    q8_0_scales,
    row_bytes,
)

# Byte offsets of the fp16 scale fields inside each block type.
FP16_FIELDS = {QT.Q8_0: (0,), QT.Q5_0: (0,), QT.Q4_K: (0, 2), QT.Q5_K: (0, 2), QT.Q6_K: (208,)}
ALL_QTYPES = sorted(SUPPORTED_QTYPES)


def random_raw(qtype: QT, leading: tuple[int, ...], n_blocks: int, seed: int = 0) -> np.ndarray:
    """Random blocks of `qtype` as uint8 ``[*leading, row_bytes]``, with finite, sane scales and floats."""
    rng = np.random.default_rng(seed)
    block_values, block_bytes = block_geometry(qtype)
    n_values = n_blocks * block_values
    if qtype == QT.F32:
        return rng.standard_normal((*leading, n_values)).astype(np.float32).view(np.uint8)
    if qtype == QT.F16:
        return rng.standard_normal((*leading, n_values)).astype(np.float16).view(np.uint8)
    if qtype == QT.BF16:
        floats = rng.standard_normal((*leading, n_values)).astype(np.float32)
        return (floats.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    raw = rng.integers(0, 256, (*leading, n_blocks, block_bytes), dtype=np.uint8)
    for offset in FP16_FIELDS[qtype]:
        scales = rng.uniform(-2.0, 2.0, (*leading, n_blocks)).astype(np.float16)
        raw[..., offset:offset + 2] = scales.view(np.uint8).reshape(*leading, n_blocks, 2)
    return raw.reshape(*leading, n_blocks * block_bytes)


def assert_matches_reference(ours: torch.Tensor, raw: np.ndarray, qtype: QT) -> None:
    reference = gguf.quants.dequantize(raw, qtype)
    assert ours.dtype == torch.float32
    assert tuple(ours.shape) == reference.shape
    err = np.abs(ours.numpy() - reference).max()
    assert err <= 1e-6 * max(1.0, float(np.abs(reference).max()))


@pytest.mark.parametrize("qtype", ALL_QTYPES, ids=lambda t: t.name)
def test_random_blocks_match_gguf_reference(qtype):
    raw = random_raw(qtype, (5,), n_blocks=8)
    assert_matches_reference(dequantize(torch.from_numpy(raw), qtype), raw, qtype)


@pytest.mark.parametrize("qtype", ALL_QTYPES, ids=lambda t: t.name)
def test_leading_dims_are_preserved(qtype):
    raw = random_raw(qtype, (2, 3), n_blocks=2, seed=1)
    ours = dequantize(torch.from_numpy(raw), qtype)
    assert ours.shape == (2, 3, 2 * block_geometry(qtype)[0])
    assert_matches_reference(ours, raw, qtype)


@pytest.mark.parametrize("qtype", sorted(SUPPORTED_QTYPES - {QT.F32, QT.F16, QT.BF16}), ids=lambda t: t.name)
def test_decoding_in_several_chunks(qtype, monkeypatch):
    monkeypatch.setattr(quants, "_CHUNK_VALUES", 3 * 256)
    raw = random_raw(qtype, (5,), n_blocks=8, seed=7)  # chunks of 3 blocks for K types, 24 for the others
    assert_matches_reference(dequantize(torch.from_numpy(raw), qtype), raw, qtype)


@pytest.mark.parametrize("qtype", ALL_QTYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
def test_out_dtype_is_rounded_float32(qtype, out_dtype):
    raw = torch.from_numpy(random_raw(qtype, (2,), n_blocks=2, seed=2))
    ours = dequantize(raw, qtype, out_dtype=out_dtype)
    assert ours.dtype == out_dtype
    assert torch.equal(ours, dequantize(raw, qtype).to(out_dtype))


@pytest.mark.parametrize("qtype", ALL_QTYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("byte_offset", [0, 1])
def test_read_only_unaligned_mmap_is_not_written(qtype, byte_offset, tmp_path):
    raw = random_raw(qtype, (3,), n_blocks=2, seed=3)
    path = tmp_path / "blocks.bin"
    path.write_bytes(b"\0" * byte_offset + raw.tobytes())
    mapped = np.memmap(path, dtype=np.uint8, mode="r", offset=byte_offset, shape=raw.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns that the array is not writable
        tensor = torch.from_numpy(mapped)
    ours = dequantize(tensor, qtype)
    ours += 1  # the result owns its memory
    assert_matches_reference(ours - 1, raw, qtype)
    assert path.read_bytes()[byte_offset:] == raw.tobytes()


@pytest.mark.parametrize("qtype", ALL_QTYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("rows, n_blocks", [(4, 2), (1, 1)])
def test_rows_sliced_at_an_odd_offset_of_a_wider_buffer(qtype, rows, n_blocks):
    raw = random_raw(qtype, (rows,), n_blocks=n_blocks, seed=6)
    wider = torch.zeros(rows, raw.shape[1] + 3, dtype=torch.uint8)
    wider[:, 1:-2] = torch.from_numpy(raw)
    assert_matches_reference(dequantize(wider[:, 1:-2], qtype), raw, qtype)


def test_block_geometry_matches_gguf():
    for qtype in SUPPORTED_QTYPES:
        assert block_geometry(qtype) == gguf.GGML_QUANT_SIZES[qtype]
    assert block_geometry(QT.F32) == (1, 4)
    assert block_geometry(int(QT.Q4_K)) == (256, 144)


def test_row_bytes():
    assert row_bytes(QT.Q5_0, 896) == 28 * 22
    assert row_bytes(QT.Q6_K, 4864) == 19 * 210
    assert row_bytes(QT.F16, 3) == 6
    with pytest.raises(ValueError, match="Q4_K"):
        row_bytes(QT.Q4_K, 896)


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q4_K, QT.F32])
@pytest.mark.parametrize("extra_bytes", [1, -1])
def test_partial_block_row_raises(qtype, extra_bytes):
    raw = torch.zeros(2, row_bytes(qtype, block_geometry(qtype)[0]) + extra_bytes, dtype=torch.uint8)
    with pytest.raises(ValueError, match=qtype.name):
        dequantize(raw, qtype)


@pytest.mark.parametrize("shape", [(), (2, 0)])
def test_rows_without_blocks_raise(shape):
    with pytest.raises(ValueError, match="Q5_0"):
        dequantize(torch.zeros(shape, dtype=torch.uint8), QT.Q5_0)


def test_no_rows_gives_no_rows():
    assert dequantize(torch.zeros(0, 3 * 22, dtype=torch.uint8), QT.Q5_0).shape == (0, 96)


def test_non_uint8_raw_raises():
    with pytest.raises(TypeError, match="uint8"):
        dequantize(torch.zeros(2, 34, dtype=torch.int8), QT.Q8_0)


@pytest.mark.parametrize("qtype", [QT.Q4_0, QT.Q2_K, QT.IQ2_XXS, 9999])
def test_unsupported_type_raises(qtype):
    name = qtype.name if isinstance(qtype, QT) else str(qtype)
    with pytest.raises(UnsupportedQuantError, match=name) as caught:
        dequantize(torch.zeros(1, 18, dtype=torch.uint8), qtype)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(UnsupportedQuantError, match=name):
        block_geometry(qtype)
    with pytest.raises(UnsupportedQuantError, match=name):
        row_bytes(qtype, 256)


SYMMETRIC_HELPERS = [
    pytest.param(QT.Q8_0, q8_0_scales, 32, -128, 127, id="Q8_0"),
    pytest.param(QT.Q5_0, q5_0_scales, 32, -16, 15, id="Q5_0"),
    pytest.param(QT.Q6_K, q6_k_scales, 16, -32, 31, id="Q6_K"),
]
ASYMMETRIC_HELPERS = [
    pytest.param(QT.Q4_K, q4_k_scales_mins, 15, id="Q4_K"),
    pytest.param(QT.Q5_K, q5_k_scales_mins, 31, id="Q5_K"),
]


@pytest.mark.parametrize("qtype, helper, group, lowest, highest", SYMMETRIC_HELPERS)
def test_symmetric_helpers_reconstruct_dequantize(qtype, helper, group, lowest, highest):
    raw = torch.from_numpy(random_raw(qtype, (2, 3), n_blocks=4, seed=4))
    scales, codes = helper(raw)
    n_values = 4 * block_geometry(qtype)[0]
    assert codes.dtype == torch.int8 and codes.shape == (2, 3, n_values)
    assert scales.dtype == torch.float32 and scales.shape == (2, 3, n_values // group)
    assert codes.min() == lowest and codes.max() == highest
    rebuilt = codes.float().unflatten(-1, (-1, group)) * scales.unsqueeze(-1)
    assert torch.equal(rebuilt.flatten(-2), dequantize(raw, qtype))


@pytest.mark.parametrize("qtype, helper, highest", ASYMMETRIC_HELPERS)
def test_asymmetric_helpers_reconstruct_dequantize(qtype, helper, highest):
    raw = torch.from_numpy(random_raw(qtype, (2, 3), n_blocks=4, seed=5))
    scales, mins, codes = helper(raw)
    assert codes.dtype == torch.uint8 and codes.shape == (2, 3, 1024)
    assert scales.shape == mins.shape == (2, 3, 32)
    assert codes.min() == 0 and codes.max() == highest
    rebuilt = codes.float().unflatten(-1, (-1, 32)) * scales.unsqueeze(-1) - mins.unsqueeze(-1)
    assert torch.equal(rebuilt.flatten(-2), dequantize(raw, qtype))


@pytest.mark.real_model
def test_real_model_tensors_match_gguf_reference(real_gguf_path):
    reader = gguf.GGUFReader(real_gguf_path)
    checked: dict[QT, int] = {}
    for tensor in reader.tensors:
        qtype = QT(tensor.tensor_type)
        if checked.get(qtype, 0) >= 3:
            continue
        assert qtype in SUPPORTED_QTYPES, f"{tensor.name} is {qtype.name}"
        raw = tensor.data.view(np.uint8).reshape(-1, row_bytes(qtype, int(tensor.shape[0])))[:64]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the memory map is read-only
            ours = dequantize(torch.from_numpy(raw), qtype)
        assert_matches_reference(ours, raw, qtype)
        checked[qtype] = checked.get(qtype, 0) + 1
    assert len(checked) >= 2
