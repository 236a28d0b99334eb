"""Missing, truncated and corrupt model files get one clear error naming the file and the problem."""

from __future__ import annotations

import json
import shutil

import pytest

from inference import ModelError, ModelFileError, UnsupportedModelError, load_model


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_path(tmp_path):
    with pytest.raises(ModelError, match="nowhere.gguf"):
        load_model(tmp_path / "nowhere.gguf")


def test_truncated_safetensors(tiny_model_dir, tmp_path):
    model_dir = _copy(tiny_model_dir("qwen2"), tmp_path / "m")
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ModelFileError, match="truncated safetensors") as info:
        load_model(model_dir)
    assert str(weights) in str(info.value)


def test_corrupt_safetensors_header(tiny_model_dir, tmp_path):
    model_dir = _copy(tiny_model_dir("qwen2"), tmp_path / "m")
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:20] = b"not json!!!!"
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupt safetensors header"):
        load_model(model_dir)


def test_gguf_with_bad_magic(tiny_gguf, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUX" + tiny_gguf("qwen2").read_bytes()[4:])
    with pytest.raises(ModelFileError, match="bad magic") as info:
        load_model(bad)
    assert str(bad) in str(info.value)


def test_truncated_gguf(tiny_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf("qwen2").read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="corrupt or truncated GGUF"):
        load_model(cut)


def test_unknown_architecture(tiny_model_dir, tmp_path):
    model_dir = _copy(tiny_model_dir("qwen2"), tmp_path / "m")
    config = json.loads((model_dir / "config.json").read_text())
    config["model_type"] = "llama"
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="unsupported architecture 'llama'"):
        load_model(model_dir)


def test_unknown_gguf_architecture(tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "llama.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedModelError, match="unsupported architecture 'llama'"):
        load_model(path)


def test_pickle_weights_are_refused(tiny_model_dir, tmp_path):
    model_dir = _copy(tiny_model_dir("qwen2"), tmp_path / "m")
    (model_dir / "model.safetensors").rename(model_dir / "pytorch_model.bin")
    with pytest.raises(ModelFileError, match="pickle weights are never loaded"):
        load_model(model_dir)


def test_missing_tokenizer(tiny_model_dir, tmp_path):
    model_dir = _copy(tiny_model_dir("qwen2"), tmp_path / "m")
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(ModelFileError, match="no tokenizer.json"):
        load_model(model_dir)


def test_missing_shard_named_by_index(tiny_model_dir, tmp_path):
    model_dir = _copy(tiny_model_dir("qwen2"), tmp_path / "m")
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}
    ))
    with pytest.raises(ModelFileError, match="shard named in model.safetensors.index.json is missing"):
        load_model(model_dir)


def test_unsupported_quant_type(tiny_model_dir, tmp_path):
    from gguf import GGMLQuantizationType

    from tiny_models import write_gguf

    path = write_gguf(tiny_model_dir("qwen2"), tmp_path / "q4_0.gguf", GGMLQuantizationType.Q4_0)
    with pytest.raises(UnsupportedModelError, match="Q4_0") as info:
        load_model(path)
    assert str(path) in str(info.value)
