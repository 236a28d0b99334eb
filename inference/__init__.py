"""The qwen-lsp runtime: Qwen models (qwen2, qwen3, qwen3_moe) in plain PyTorch, from HF
safetensors directories or GGUF files. It knows nothing of LSP."""

from .errors import ModelError, ModelFileError, ModelNotFoundError, UnsupportedModelError
from .generate import GenerationResult
from .language_model import LanguageModel, load_model
from .sampling import GenerationConfig

__all__ = [
    "GenerationConfig", "GenerationResult", "LanguageModel", "load_model",
    "ModelError", "ModelFileError", "ModelNotFoundError", "UnsupportedModelError",
]
