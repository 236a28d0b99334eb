"""The qwen-lsp runtime: Qwen models (qwen2, qwen3, qwen3_moe) in plain PyTorch, from HF
safetensors directories or GGUF files. It knows nothing of LSP.

Names are imported on first use, so `import inference.errors` (or a CLI that only parses
arguments) does not pay for importing torch.
"""

import os
from importlib import import_module

# OpenMP worker threads sleep between parallel regions instead of spinning. On cores shared with an
# editor and other work, spinning workers fight the threads doing the work (decode measured 8x slower
# with two busy neighbours on 2 cores); sleeping costs microseconds per region. Takes effect when this
# package is imported before torch (the CLI, server and bench do); set the variable to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_EXPORTS = {
    "GenerationConfig": ".sampling",
    "GenerationResult": ".generate",
    "LanguageModel": ".language_model",
    "load_model": ".language_model",
    "ModelError": ".errors",
    "ModelFileError": ".errors",
    "ModelNotFoundError": ".errors",
    "UnsupportedModelError": ".errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
