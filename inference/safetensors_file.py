"""Hugging Face model directories: config.json, tokenizer.json and memory-mapped safetensors shards.

The shards are parsed here (8-byte header length, JSON header, raw data) and mapped copy-on-write,
so weights are paged in from the file on use and never loaded through pickle.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointTensor
from .config import ModelConfig
from .errors import ModelFileError

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}

# Canonical (GGUF-style) names to Hugging Face names.
_HF_NAMES = [
    (r"token_embd\.weight", r"model.embed_tokens.weight"),
    (r"output_norm\.weight", r"model.norm.weight"),
    (r"output\.weight", r"lm_head.weight"),
    (r"blk\.(\d+)\.attn_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"blk\.(\d+)\.ffn_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"blk\.(\d+)\.attn_q\.(weight|bias)", r"model.layers.\1.self_attn.q_proj.\2"),
    (r"blk\.(\d+)\.attn_k\.(weight|bias)", r"model.layers.\1.self_attn.k_proj.\2"),
    (r"blk\.(\d+)\.attn_v\.(weight|bias)", r"model.layers.\1.self_attn.v_proj.\2"),
    (r"blk\.(\d+)\.attn_output\.(weight|bias)", r"model.layers.\1.self_attn.o_proj.\2"),
    (r"blk\.(\d+)\.attn_q_norm\.weight", r"model.layers.\1.self_attn.q_norm.weight"),
    (r"blk\.(\d+)\.attn_k_norm\.weight", r"model.layers.\1.self_attn.k_norm.weight"),
    (r"blk\.(\d+)\.ffn_gate\.weight", r"model.layers.\1.mlp.gate_proj.weight"),
    (r"blk\.(\d+)\.ffn_up\.weight", r"model.layers.\1.mlp.up_proj.weight"),
    (r"blk\.(\d+)\.ffn_down\.weight", r"model.layers.\1.mlp.down_proj.weight"),
    (r"blk\.(\d+)\.ffn_gate_inp\.weight", r"model.layers.\1.mlp.gate.weight"),
    # qwen3_next, named as llama.cpp names it (see `_qwen3_next_values` for the derived ones)
    (r"blk\.(\d+)\.post_attention_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"blk\.(\d+)\.attn_(?:qkv|gate)\.weight", r"model.layers.\1.linear_attn.in_proj_qkvz.weight"),
    (r"blk\.(\d+)\.ssm_ba\.weight", r"model.layers.\1.linear_attn.in_proj_ba.weight"),
    (r"blk\.(\d+)\.ssm_conv1d\.weight", r"model.layers.\1.linear_attn.conv1d.weight"),
    (r"blk\.(\d+)\.ssm_a", r"model.layers.\1.linear_attn.A_log"),
    (r"blk\.(\d+)\.ssm_dt\.bias", r"model.layers.\1.linear_attn.dt_bias"),
    (r"blk\.(\d+)\.ssm_norm\.weight", r"model.layers.\1.linear_attn.norm.weight"),
    (r"blk\.(\d+)\.ssm_out\.weight", r"model.layers.\1.linear_attn.out_proj.weight"),
    (r"blk\.(\d+)\.ffn_gate_inp_shexp\.weight", r"model.layers.\1.mlp.shared_expert_gate.weight"),
    (r"blk\.(\d+)\.ffn_(gate|up|down)_shexp\.weight", r"model.layers.\1.mlp.shared_expert.\2_proj.weight"),
]

# qwen3_next's multi-token-prediction head: its layers follow the decoder's (blk.{num_layers + j} is
# mtp.layers.{j}), and its own tensors are named as llama.cpp names next-token-prediction layers.
_MTP_NAMES = {
    "nextn.eh_proj.weight": "mtp.fc.weight",
    "nextn.enorm.weight": "mtp.pre_fc_norm_embedding.weight",
    "nextn.hnorm.weight": "mtp.pre_fc_norm_hidden.weight",
    "nextn.shared_head_norm.weight": "mtp.norm.weight",
}

# qwen3_next's RMSNorms scale by (1 + w); llama.cpp stores 1 + w, and so do canonical names.
_ZERO_CENTRED_NORM = re.compile(
    r"(blk\.\d+\.(attn_norm|post_attention_norm|attn_q_norm|attn_k_norm|nextn\.(enorm|hnorm|shared_head_norm))"
    r"|output_norm)\.weight"
)


def hf_name(canonical: str, num_layers: int | None = None) -> str:
    """The Hugging Face spelling of a canonical tensor name (layers from `num_layers` on are MTP layers)."""
    layer = re.fullmatch(r"blk\.(\d+)\.(.+)", canonical)
    if layer and num_layers is not None and int(layer[1]) >= num_layers:
        rest = layer[2]
        if rest in _MTP_NAMES:
            return _MTP_NAMES[rest]
        return hf_name(f"blk.0.{rest}").replace("model.layers.0.", f"mtp.layers.{int(layer[1]) - num_layers}.", 1)
    for pattern, replacement in _HF_NAMES:
        if re.fullmatch(pattern, canonical):
            return re.sub(pattern, replacement, canonical)
    raise KeyError(canonical)


class SafetensorsCheckpoint:
    """A model directory with one or many safetensors shards (via model.safetensors.index.json)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        config_path = self.path / "config.json"
        if not config_path.is_file():
            raise ModelFileError(self.path, "model directory has no config.json")
        try:
            raw_config = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFileError(config_path, f"config.json is not valid JSON ({exc})") from exc
        self.config = ModelConfig.from_hf(raw_config, str(config_path))
        self._raw_config = raw_config
        self._index: dict[str, tuple[Path, dict]] = {}
        for shard in self._shard_paths():
            for name, entry in _read_header(shard).items():
                self._index[name] = (shard, entry)
        self._maps: dict[Path, np.memmap] = {}

    def _shard_paths(self) -> list[Path]:
        index_path = self.path / "model.safetensors.index.json"
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as exc:
                raise ModelFileError(index_path, f"invalid safetensors index ({exc})") from exc
            shards = sorted({self.path / name for name in weight_map.values()})
            for shard in shards:
                if not shard.is_file():
                    raise ModelFileError(shard, "shard named in model.safetensors.index.json is missing")
            return shards
        shards = sorted(self.path.glob("*.safetensors"))
        if not shards:
            pickles = sorted(p.name for p in self.path.glob("*.bin")) + sorted(p.name for p in self.path.glob("*.pt"))
            hint = f" (found {', '.join(pickles)}: pickle weights are never loaded)" if pickles else ""
            raise ModelFileError(self.path, f"model directory has no *.safetensors weights{hint}")
        return shards

    def has(self, name: str) -> bool:
        try:
            return hf_name(name, self.config.num_layers) in self._index
        except KeyError:
            return False

    def tensor(self, name: str) -> CheckpointTensor:
        stored = self._tensor_by_hf_name(hf_name(name, self.config.num_layers), canonical=name)
        if self.config.architecture == "qwen3_next":
            return _qwen3_next_values(stored, self.config)
        return stored

    def expert_tensors(self, layer: int, projection: str) -> list[CheckpointTensor]:
        prefix = hf_name(f"blk.{layer}.ffn_gate_inp.weight", self.config.num_layers).replace(".gate.weight", ".experts")
        per_expert = f"{prefix}.0.{projection}_proj.weight"
        if per_expert in self._index:
            return [
                self._tensor_by_hf_name(f"{prefix}.{e}.{projection}_proj.weight")
                for e in range(self.config.num_experts)
            ]
        # transformers 5 may store fused experts: gate_up_proj [E, 2*ff, hidden], down_proj [E, hidden, ff].
        fused_name = f"{prefix}.gate_up_proj" if projection in ("gate", "up") else f"{prefix}.down_proj"
        fused = self._tensor_by_hf_name(fused_name)
        ff = self.config.moe_intermediate_size
        pieces = []
        for e in range(fused.shape[0]):
            data = fused.data[e]
            if projection == "gate":
                data = data[:ff]
            elif projection == "up":
                data = data[ff:]
            pieces.append(CheckpointTensor(f"{fused_name}[{e}].{projection}", tuple(data.shape), data))
        return pieces

    def _tensor_by_hf_name(self, name: str, canonical: str | None = None) -> CheckpointTensor:
        if name not in self._index:
            raise ModelFileError(self.path, f"checkpoint lacks tensor {name!r}")
        shard, entry = self._index[name]
        start, end = entry["data_offsets"]
        data_start = entry["_data_start"]
        mapped = self._maps.get(shard)
        if mapped is None:
            mapped = self._maps[shard] = np.memmap(shard, dtype=np.uint8, mode="c")
        raw = torch.from_numpy(mapped[data_start + start : data_start + end])
        dtype = _DTYPES[entry["dtype"]]
        try:
            data = raw.view(dtype)
        except RuntimeError:  # unaligned offset: this one tensor is copied
            data = raw.clone().view(dtype)
        shape = tuple(entry["shape"])
        return CheckpointTensor(canonical or name, shape, data.reshape(shape))

    def load_tokenizer(self):
        from .tokenizer import Tokenizer

        return Tokenizer.from_model_dir(self.path, self._raw_config)


def _qwen3_next_values(stored: CheckpointTensor, config: ModelConfig) -> CheckpointTensor:
    """HF qwen3_next tensors in llama.cpp's form: norms as 1 + w, A as -exp(A_log), the depthwise
    convolution as [channels, kernel], and in_proj_qkvz (grouped by key head: q, k, v, z of each
    group) split into attn_qkv (all q, all k, all v) and attn_gate (z)."""
    name, data = stored.name, stored.data
    if _ZERO_CENTRED_NORM.fullmatch(name):
        data = data.float() + 1.0
    elif name.endswith(".ssm_a"):
        data = -torch.exp(data.float())
    elif name.endswith(".ssm_conv1d.weight"):
        data = data.reshape(data.shape[0], -1)
    elif name.endswith((".attn_qkv.weight", ".attn_gate.weight")):
        groups, dk = config.linear_num_key_heads, config.linear_key_head_dim
        vz = config.linear_num_value_heads // groups * config.linear_value_head_dim
        q, k, v, z = data.reshape(groups, 2 * dk + 2 * vz, -1).split([dk, dk, vz, vz], dim=1)
        parts = (q, k, v) if name.endswith(".attn_qkv.weight") else (z,)
        data = torch.cat([part.reshape(-1, data.shape[-1]) for part in parts])
    else:
        return stored
    return CheckpointTensor(name, tuple(data.shape), data)


def _read_header(shard: Path) -> dict[str, dict]:
    """Parse and validate a safetensors header; each entry gets `_data_start` (absolute byte offset)."""
    size = shard.stat().st_size
    with open(shard, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ModelFileError(shard, "truncated safetensors file (no header)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100 * 2**20):
            raise ModelFileError(shard, f"corrupt safetensors header length {header_len} (file is {size} bytes)")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFileError(shard, f"corrupt safetensors header ({exc})") from exc
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    for name, entry in header.items():
        dtype = entry.get("dtype")
        if dtype not in _DTYPES:
            raise ModelFileError(shard, f"tensor {name!r} has unsupported dtype {dtype!r}")
        start, end = entry["data_offsets"]
        expected = math.prod(entry["shape"]) * _DTYPES[dtype].itemsize
        if end - start != expected:
            raise ModelFileError(shard, f"tensor {name!r} spans {end - start} bytes, its shape needs {expected}")
        if data_start + end > size:
            raise ModelFileError(
                shard, f"truncated safetensors file: tensor {name!r} ends at byte {data_start + end}, file has {size}"
            )
        entry["_data_start"] = data_start
    return header
