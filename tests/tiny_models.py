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
    with torch.no_grad():  # norms start at 1.0; random values make the test see them
        for name, param in model.named_parameters():
            if "norm" in name:
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


_GGUF_ARCH = {"qwen2": "qwen2", "qwen3": "qwen3", "qwen3_moe": "qwen3moe"}
_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "mlp.gate": "ffn_gate_inp",
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
    if arch == "qwen3moe":
        writer.add_expert_count(num_experts)
        writer.add_expert_used_count(cfg["num_experts_per_tok"])
        writer.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
        writer.add_bool(f"{arch}.expert_weights_norm", bool(cfg["norm_topk_prob"]))
    _add_tokenizer(writer, Tokenizer.from_file(str(hf_dir / "tokenizer.json")), cfg["eos_token_id"])

    def add(name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array.astype(np.float32))
        if array.ndim >= 2 and qtype != GGMLQuantizationType.F32:
            writer.add_tensor(name, quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, array)

    add("token_embd.weight", tensors["model.embed_tokens.weight"])
    add("output_norm.weight", tensors["model.norm.weight"])
    if "lm_head.weight" in tensors and not cfg.get("tie_word_embeddings"):
        add("output.weight", tensors["lm_head.weight"])
    for i in range(cfg["num_hidden_layers"]):
        prefix = f"model.layers.{i}."
        for hf, short in _GGUF_NAMES.items():
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
