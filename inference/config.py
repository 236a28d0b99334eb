"""The architecture description of a Qwen model, read from an HF config.json or GGUF metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ModelFileError, UnsupportedModelError

SUPPORTED_ARCHITECTURES = ("qwen2", "qwen3", "qwen3_moe", "qwen3_next")

# GGUF spells the MoE architectures without the underscore.
_GGUF_ARCHITECTURES = {"qwen2": "qwen2", "qwen3": "qwen3", "qwen3moe": "qwen3_moe", "qwen3next": "qwen3_next"}

FULL_ATTENTION, LINEAR_ATTENTION = "full_attention", "linear_attention"


@dataclass(frozen=True)
class ModelConfig:
    """Every size and switch the forward pass needs; nothing is assumed from the model's name."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    context_length: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    num_experts: int = 0
    num_experts_per_token: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = field(default_factory=tuple)
    shared_expert_intermediate_size: int = 0
    # qwen3_next: the token mixer of each layer, the full-attention output gate and partial rotary,
    # and the Gated DeltaNet sizes of the linear-attention layers.
    layer_types: tuple[str, ...] = field(default_factory=tuple)
    attention_output_gate: bool = False
    rotary_dim: int = 0  # 0: the whole head
    linear_conv_kernel: int = 0
    linear_num_key_heads: int = 0
    linear_num_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    # Multi-token-prediction layers after the decoder (qwen3_next's MTP head), counted as layers
    # num_layers .. num_layers + mtp_layers - 1 in canonical tensor names.
    mtp_layers: int = 0
    name: str = ""

    def is_linear_attention_layer(self, layer: int) -> bool:
        """Whether `layer` mixes tokens with a Gated DeltaNet (a recurrent state) instead of attention."""
        return bool(self.layer_types) and self.layer_types[layer] == LINEAR_ATTENTION

    @property
    def is_recurrent(self) -> bool:
        """Whether some layer carries a recurrent state, which can't be cut back like keys/values."""
        return LINEAR_ATTENTION in self.layer_types

    def is_moe_layer(self, layer: int) -> bool:
        """Whether `layer` routes through experts (Qwen3-MoE's decoder_sparse_step / mlp_only_layers rule)."""
        return (
            self.num_experts > 0
            and layer not in self.mlp_only_layers
            and (layer + 1) % self.decoder_sparse_step == 0
        )

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], source: str) -> "ModelConfig":
        """Read an HF `config.json` dict (transformers 4.x and 5.x spellings)."""
        arch = cfg.get("model_type")
        if arch not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedModelError(
                source, f"unsupported architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
            )
        if cfg.get("use_sliding_window"):
            raise UnsupportedModelError(source, "sliding-window attention (use_sliding_window=true) is not supported")
        _check_rope(cfg, source)
        get = _required(cfg, source)
        hidden, heads = get("hidden_size"), get("num_attention_heads")
        is_moe = arch in ("qwen3_moe", "qwen3_next")
        head_dim = cfg.get("head_dim") or hidden // heads
        next_fields = _qwen3_next_fields(cfg, get, head_dim, source) if arch == "qwen3_next" else {}
        return cls(
            architecture=arch,
            vocab_size=get("vocab_size"),
            hidden_size=hidden,
            intermediate_size=cfg.get("intermediate_size") or 0,
            num_layers=get("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(_rope_theta(cfg)),
            context_length=int(cfg.get("max_position_embeddings", 32768)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=True if arch == "qwen2" else bool(cfg.get("attention_bias", False)),
            qk_norm=arch in ("qwen3", "qwen3_moe", "qwen3_next"),
            num_experts=(cfg.get("num_experts") or get("num_local_experts")) if is_moe else 0,
            num_experts_per_token=get("num_experts_per_tok") if is_moe else 0,
            moe_intermediate_size=get("moe_intermediate_size") if is_moe else 0,
            norm_topk_prob=bool(cfg.get("norm_topk_prob", False)) if is_moe else True,
            decoder_sparse_step=int(cfg.get("decoder_sparse_step", 1) or 1),
            mlp_only_layers=tuple(cfg.get("mlp_only_layers") or ()),
            name=str(cfg.get("_name_or_path", "")),
            **next_fields,
        )

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], source: str) -> "ModelConfig":
        """Read GGUF metadata (`{arch}.block_count`, `{arch}.attention.head_count`, ...)."""
        gguf_arch = meta.get("general.architecture")
        arch = _GGUF_ARCHITECTURES.get(gguf_arch)
        if arch is None:
            raise UnsupportedModelError(
                source, f"unsupported architecture {gguf_arch!r} (supported: {', '.join(_GGUF_ARCHITECTURES)})"
            )
        scaling = meta.get(f"{gguf_arch}.rope.scaling.type", "none")
        if scaling not in ("none", None):
            raise UnsupportedModelError(source, f"rope scaling {scaling!r} is not supported")

        def get(key: str, default: Any = None) -> Any:
            value = meta.get(f"{gguf_arch}.{key}", default)
            if value is None:
                raise ModelFileError(source, f"GGUF metadata lacks {gguf_arch}.{key}")
            return value

        hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
        is_moe = arch in ("qwen3_moe", "qwen3_next")
        head_dim = int(get("attention.key_length", hidden // heads))
        # llama.cpp counts next-token-prediction layers in block_count, after the decoder's.
        num_layers = int(get("block_count")) - int(get("nextn_predict_layers", 0))
        next_fields = _qwen3_next_gguf_fields(get, num_layers) if arch == "qwen3_next" else {}
        vocab = meta.get(f"{gguf_arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens") or ())
        if not vocab:
            raise ModelFileError(source, "GGUF metadata gives no vocabulary size")
        return cls(
            architecture=arch,
            vocab_size=int(vocab),
            hidden_size=hidden,
            intermediate_size=int(get("feed_forward_length", 0)),
            num_layers=num_layers,
            num_heads=heads,
            num_kv_heads=int(get("attention.head_count_kv", heads)),
            head_dim=head_dim,
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            context_length=int(get("context_length", 32768)),
            attention_bias=arch == "qwen2",
            qk_norm=arch in ("qwen3", "qwen3_moe", "qwen3_next"),
            num_experts=int(get("expert_count")) if is_moe else 0,
            num_experts_per_token=int(get("expert_used_count")) if is_moe else 0,
            moe_intermediate_size=int(get("expert_feed_forward_length")) if is_moe else 0,
            norm_topk_prob=bool(meta.get(f"{gguf_arch}.expert_weights_norm", True)),
            name=str(meta.get("general.name", "")),
            **next_fields,
        )


def _layer_types(num_layers: int, full_attention_interval: int) -> tuple[str, ...]:
    """Every `full_attention_interval`-th layer attends fully, the others are linear attention."""
    return tuple(LINEAR_ATTENTION if (i + 1) % full_attention_interval else FULL_ATTENTION for i in range(num_layers))


def _qwen3_next_fields(cfg: dict[str, Any], get, head_dim: int, source: str) -> dict[str, Any]:
    layers = get("num_hidden_layers")
    layer_types = tuple(cfg.get("layer_types") or _layer_types(layers, int(cfg.get("full_attention_interval", 4))))
    unknown = set(layer_types) - {FULL_ATTENTION, LINEAR_ATTENTION}
    if len(layer_types) != layers or unknown:
        raise ModelFileError(source, f"layer_types must name {layers} layers as full/linear attention")
    factor = cfg.get("partial_rotary_factor") or _rope_settings(cfg).get("partial_rotary_factor") or 0.25
    return dict(
        layer_types=layer_types, attention_output_gate=True, rotary_dim=int(head_dim * factor),
        shared_expert_intermediate_size=get("shared_expert_intermediate_size"),
        linear_conv_kernel=get("linear_conv_kernel_dim"), linear_num_key_heads=get("linear_num_key_heads"),
        linear_num_value_heads=get("linear_num_value_heads"), linear_key_head_dim=get("linear_key_head_dim"),
        linear_value_head_dim=get("linear_value_head_dim"),
        mtp_layers=int(cfg.get("mtp_num_hidden_layers") or cfg.get("num_nextn_predict_layers") or 0),
    )


def _qwen3_next_gguf_fields(get, num_layers: int) -> dict[str, Any]:
    """llama.cpp's qwen3next keys: ssm.group_count = key heads, ssm.time_step_rank = value heads,
    ssm.state_size = key head width, ssm.inner_size = all value heads' width."""
    value_heads = int(get("ssm.time_step_rank"))
    return dict(
        layer_types=_layer_types(num_layers, int(get("full_attention_interval", 4))), attention_output_gate=True,
        rotary_dim=int(get("rope.dimension_count")),
        shared_expert_intermediate_size=int(get("expert_shared_feed_forward_length")),
        linear_conv_kernel=int(get("ssm.conv_kernel")), linear_num_key_heads=int(get("ssm.group_count")),
        linear_num_value_heads=value_heads, linear_key_head_dim=int(get("ssm.state_size")),
        linear_value_head_dim=int(get("ssm.inner_size")) // value_heads,
        mtp_layers=int(get("nextn_predict_layers", 0)),
    )


def _required(cfg: dict[str, Any], source: str):
    def get(key: str) -> Any:
        if cfg.get(key) is None:
            raise ModelFileError(source, f"config.json lacks {key!r}")
        return cfg[key]

    return get


def _rope_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}


def _rope_theta(cfg: dict[str, Any]) -> float:
    return cfg.get("rope_theta") or _rope_settings(cfg).get("rope_theta") or 10000.0


def _check_rope(cfg: dict[str, Any], source: str) -> None:
    settings = _rope_settings(cfg)
    kind = settings.get("rope_type", settings.get("type", "default"))
    if kind not in ("default", None):
        raise UnsupportedModelError(source, f"rope scaling {kind!r} is not supported")
