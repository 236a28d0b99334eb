"""Tiny random Qwen checkpoints made by the transformers reference, saved as safetensors and GGUF.

Test-only: transformers and gguf's writer build the files our runtime must read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter, quants
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

QWEN_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n    print(i * i)\n",
    "import os\nimport sys\n\nif __name__ == '__main__':\n    main(sys.argv)\n",
    "function greet(name) { return `Hello, ${name}!`; }\n",
    "fn main() { let v: Vec<i32> = vec![1, 2, 3]; println!(\"{:?}\", v); }\n",
] * 20

# Architecture variants the tests cover.
TINY_CONFIGS = {
    "qwen2": dict(model_type="qwen2", tie_word_embeddings=False),
    "qwen2_tied": dict(model_type="qwen2", tie_word_embeddings=True),
    # the qwen2 weights with a long context: prompts whose prefill takes many chunks
    "qwen2_long": dict(model_type="qwen2", tie_word_embeddings=False, max_position_embeddings=32768),
    "qwen3": dict(model_type="qwen3", head_dim=24),
    "qwen3_moe": dict(
        model_type="qwen3_moe", num_experts=6, num_experts_per_tok=2, moe_intermediate_size=24,
        norm_topk_prob=True, decoder_sparse_step=2, mlp_only_layers=[2], num_hidden_layers=4,
    ),
    # Expert widths of whole 32-value blocks, so the experts can be stored as Q8_0/Q5_0.
    "qwen3_moe_blocks": dict(
        model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], num_hidden_layers=2,
    ),
    "qwen3_moe_unnormed": dict(
        model_type="qwen3_moe", num_experts=4, num_experts_per_tok=3, moe_intermediate_size=16,
        norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[], num_hidden_layers=2,
    ),
    # Hybrid: Gated DeltaNet (2 key heads serving 4 value heads) and gated full attention every
    # second layer; MoE with a shared expert, layer 2 dense. Smaller weights: with 0.25 the chunked
    # delta rule's triangular solve amplifies rounding past 1e-4 (transformers' own prefill and
    # decode then disagree by 5e-3).
    "qwen3_next": dict(
        model_type="qwen3_next", num_hidden_layers=4, initializer_range=0.1, full_attention_interval=2, head_dim=16,
        partial_rotary_factor=0.5, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
        linear_value_head_dim=12, linear_conv_kernel_dim=4, num_experts=4, num_experts_per_tok=2,
        moe_intermediate_size=24, shared_expert_intermediate_size=32, mlp_only_layers=[2],
    ),
}


def make_tokenizer() -> Tokenizer:
    """A small byte-level BPE with Qwen's pre-tokenizer and control tokens."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def make_hf_checkpoint(variant: str, out_dir: Path, seed: int = 0) -> Path:
    """Write config.json, model.safetensors and tokenizer.json for a tiny random model."""
    import transformers

    out_dir = Path(out_dir)
    tok = make_tokenizer()
    eos = tok.token_to_id("<|endoftext|>")
    params = dict(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6,
        rope_theta=10000.0, initializer_range=0.25, eos_token_id=eos, bos_token_id=eos,
    )
    params.update(TINY_CONFIGS[variant])
    model_type = params.pop("model_type")
    config_class = transformers.AutoConfig.for_model(model_type).__class__
    config = config_class(**params)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    zero_centred = model_type == "qwen3_next"  # its RMSNorms scale by 1 + w, except the gated one
    with torch.no_grad():  # norms start at 1.0; random values make the test see them
        for name, param in model.named_parameters():
            if "norm" in name and zero_centred and "linear_attn.norm" not in name:
                param.uniform_(-0.5, 0.5)
            elif "norm" in name:
                param.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                param.normal_(0, 0.3)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save(str(out_dir / "tokenizer.json"))
    return out_dir


def load_reference(hf_dir: Path):
    """The transformers model for a checkpoint, eager attention, fp32, eval mode."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32,
                                                              attn_implementation="eager")
    return model.eval()


_GGUF_ARCH = {"qwen2": "qwen2", "qwen3": "qwen3", "qwen3_moe": "qwen3moe", "qwen3_next": "qwen3next"}
_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "mlp.gate": "ffn_gate_inp",
}
# qwen3_next as llama.cpp's convert_hf_to_gguf.py writes it (in_proj_qkvz, A_log, conv1d and the
# zero-centred norms are converted in `_qwen3_next_tensors`).
_QWEN3_NEXT_GGUF_NAMES = {
    **_GGUF_NAMES, "post_attention_layernorm": "post_attention_norm", "linear_attn.in_proj_ba": "ssm_ba",
    "linear_attn.norm": "ssm_norm", "linear_attn.out_proj": "ssm_out", "mlp.shared_expert_gate": "ffn_gate_inp_shexp",
    "mlp.shared_expert.gate_proj": "ffn_gate_shexp", "mlp.shared_expert.up_proj": "ffn_up_shexp",
    "mlp.shared_expert.down_proj": "ffn_down_shexp",
}


def write_gguf(hf_dir: Path, out_path: Path, qtype: GGMLQuantizationType = GGMLQuantizationType.F32) -> Path:
    """Convert a tiny HF checkpoint to GGUF the way llama.cpp names things; 2-D weights in `qtype`."""
    from safetensors.numpy import load_file

    hf_dir = Path(hf_dir)
    cfg = json.loads((hf_dir / "config.json").read_text())
    arch = _GGUF_ARCH[cfg["model_type"]]
    tensors = load_file(str(hf_dir / "model.safetensors"))
    writer = GGUFWriter(str(out_path), arch)
    rope = cfg.get("rope_parameters") or {}
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_rope_freq_base(cfg.get("rope_theta") or rope.get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    num_experts = cfg.get("num_experts") or cfg.get("num_local_experts")
    if arch in ("qwen3moe", "qwen3next"):
        writer.add_expert_count(num_experts)
        writer.add_expert_used_count(cfg["num_experts_per_tok"])
        writer.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
        writer.add_bool(f"{arch}.expert_weights_norm", bool(cfg["norm_topk_prob"]))
    names, converted = _GGUF_NAMES, {}
    if arch == "qwen3next":
        _add_qwen3_next_metadata(writer, cfg, head_dim)
        tensors, converted = _qwen3_next_tensors(tensors, cfg)
        names = _QWEN3_NEXT_GGUF_NAMES
    _add_tokenizer(writer, Tokenizer.from_file(str(hf_dir / "tokenizer.json")), cfg["eos_token_id"])

    def add(name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array.astype(np.float32))
        if array.ndim >= 2 and qtype != GGMLQuantizationType.F32 and ".ssm_conv1d." not in name:
            writer.add_tensor(name, quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, array)

    for name, array in converted.items():
        add(name, array)
    add("token_embd.weight", tensors["model.embed_tokens.weight"])
    add("output_norm.weight", tensors["model.norm.weight"])
    if "lm_head.weight" in tensors and not cfg.get("tie_word_embeddings"):
        add("output.weight", tensors["lm_head.weight"])
    for i in range(cfg["num_hidden_layers"]):
        prefix = f"model.layers.{i}."
        for hf, short in names.items():
            for kind in ("weight", "bias"):
                key = f"{prefix}{hf}.{kind}"
                if key in tensors:
                    add(f"blk.{i}.{short}.{kind}", tensors[key])
        if f"{prefix}mlp.experts.0.gate_proj.weight" in tensors:
            for proj in ("gate", "up", "down"):
                stacked = np.stack([
                    tensors[f"{prefix}mlp.experts.{e}.{proj}_proj.weight"] for e in range(num_experts)
                ])
                add(f"blk.{i}.ffn_{proj}_exps.weight", stacked)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(out_path)


def _add_qwen3_next_metadata(writer: GGUFWriter, cfg: dict, head_dim: int) -> None:
    layer_types = cfg["layer_types"]
    interval = layer_types.index("full_attention") + 1
    assert all((t == "full_attention") == ((i + 1) % interval == 0) for i, t in enumerate(layer_types)), \
        "GGUF can only say full_attention_interval"
    writer.add_full_attention_interval(interval)
    writer.add_rope_dimension_count(int(head_dim * cfg["rope_parameters"]["partial_rotary_factor"]))
    writer.add_expert_shared_feed_forward_length(cfg["shared_expert_intermediate_size"])
    writer.add_ssm_conv_kernel(cfg["linear_conv_kernel_dim"])
    writer.add_ssm_state_size(cfg["linear_key_head_dim"])
    writer.add_ssm_group_count(cfg["linear_num_key_heads"])
    writer.add_ssm_time_step_rank(cfg["linear_num_value_heads"])
    writer.add_ssm_inner_size(cfg["linear_value_head_dim"] * cfg["linear_num_value_heads"])


def _qwen3_next_tensors(tensors: dict, cfg: dict) -> tuple[dict, dict]:
    """llama.cpp's conversion: norms stored as 1 + w (not the gated one), A_log as -exp(A_log),
    dt_bias as ssm_dt.bias, conv1d squeezed, in_proj_qkvz regrouped into attn_qkv and attn_gate."""
    tensors, converted = dict(tensors), {}
    groups, dk = cfg["linear_num_key_heads"], cfg["linear_key_head_dim"]
    vz = cfg["linear_num_value_heads"] // groups * cfg["linear_value_head_dim"]
    for key in list(tensors):
        if key.endswith("norm.weight") and not key.endswith("linear_attn.norm.weight"):
            tensors[key] = tensors[key] + 1
        if ".linear_attn." not in key:
            continue
        block = "blk." + key.split(".")[2]
        value = tensors[key]
        if key.endswith(".A_log"):
            converted[block + ".ssm_a"] = -np.exp(value)
        elif key.endswith(".dt_bias"):
            converted[block + ".ssm_dt.bias"] = value
        elif key.endswith(".conv1d.weight"):
            converted[block + ".ssm_conv1d.weight"] = value.squeeze(1)
        elif key.endswith(".in_proj_qkvz.weight"):
            q, k, v, z = np.split(value.reshape(groups, 2 * dk + 2 * vz, -1), np.cumsum([dk, dk, vz]), axis=1)
            hidden = value.shape[-1]
            converted[block + ".attn_qkv.weight"] = np.concatenate([x.reshape(-1, hidden) for x in (q, k, v)])
            converted[block + ".attn_gate.weight"] = z.reshape(-1, hidden)
    return tensors, converted


def _add_tokenizer(writer: GGUFWriter, tok: Tokenizer, eos_id: int) -> None:
    state = json.loads(tok.to_str())
    vocab = state["model"]["vocab"]
    size = tok.get_vocab_size()
    tokens = [""] * size
    for text, idx in vocab.items():
        tokens[idx] = text
    types = [1] * size
    for added in state["added_tokens"]:
        tokens[added["id"]] = added["content"]
        types[added["id"]] = 3 if added["special"] else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(eos_id)
