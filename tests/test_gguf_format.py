"""Our GGUF container reader against the `gguf` package's reader (the reference): same metadata,
same tensor bytes and shapes, clear errors on malformed files."""

import gguf
import pytest
import torch
from gguf import GGMLQuantizationType as QT

from inference.gguf_format import GGUFContainer, GGUFFormatError


def assert_same_as_reference(path):
    ours = GGUFContainer(path)
    reference = gguf.GGUFReader(path)
    expected = {k: f.contents() for k, f in reference.fields.items() if not k.startswith("GGUF.")}
    assert ours.metadata == expected
    assert list(ours.tensors) == [t.name for t in reference.tensors]
    for tensor in reference.tensors:
        data = ours.data(tensor.name)
        want = torch.from_numpy(tensor.data.copy())
        assert data.shape == want.shape or data.dtype == torch.bfloat16, tensor.name
        assert torch.equal(data.reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8))
        assert ours.tensors[tensor.name].n_bytes == int(tensor.n_bytes)


@pytest.mark.parametrize("qtype", [QT.F32, QT.F16, QT.Q8_0])  # k-quants: the real-model test
def test_tiny_files_read_like_the_reference(tiny_gguf, qtype):
    assert_same_as_reference(tiny_gguf("qwen2", qtype))


def test_expert_stacks_read_like_the_reference(tiny_gguf):
    assert_same_as_reference(tiny_gguf("qwen3_moe", QT.F16))


def test_string_arrays_and_scalars(tmp_path):
    path = tmp_path / "kv.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_array("tokens", ["a", "ü", "", "<|fim_prefix|>"])
    writer.add_array("scores", [1.5, -2.0])
    writer.add_bool("flag", True)
    writer.add_uint32("count", 7)
    writer.add_tensor("w", torch.arange(6, dtype=torch.float32).reshape(2, 3).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    container = GGUFContainer(path)
    assert container.metadata["tokens"] == ["a", "ü", "", "<|fim_prefix|>"]
    assert container.metadata["scores"] == [1.5, -2.0]
    assert container.metadata["flag"] is True and container.metadata["count"] == 7
    assert torch.equal(container.data("w"), torch.arange(6, dtype=torch.float32).reshape(2, 3))


def test_malformed_files_raise_clear_errors(tiny_gguf, tmp_path):
    good = tiny_gguf("qwen2", QT.Q8_0).read_bytes()
    bad_magic = tmp_path / "magic.gguf"
    bad_magic.write_bytes(b"GGUX" + good[4:])
    with pytest.raises(GGUFFormatError, match="not a GGUF file"):
        GGUFContainer(bad_magic)
    for cut in (30, 2000, len(good) - 100):
        truncated = tmp_path / f"cut{cut}.gguf"
        truncated.write_bytes(good[:cut])
        with pytest.raises((GGUFFormatError, ValueError)):
            GGUFContainer(truncated)


@pytest.mark.real_model
def test_real_model_reads_like_the_reference(real_gguf):
    assert_same_as_reference(real_gguf)
