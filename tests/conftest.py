"""Shared fixtures: tiny random checkpoints (made once per session) and the real model tier."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(min(2, os.cpu_count() or 1))

from tiny_models import make_hf_checkpoint, write_gguf  # noqa: E402


def pytest_configure(config):
    """Real-model tier: QWEN_LSP_TEST_GGUF names the default model, fetched (once, cached) if unset."""
    markexpr = config.getoption("markexpr", "") or ""
    if os.environ.get("QWEN_LSP_TEST_GGUF") or "not real_model" in markexpr:
        return
    from inference.model_store import resolve_model

    os.environ["QWEN_LSP_TEST_GGUF"] = str(resolve_model("default", progress=True))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory: variant name -> HF directory of a tiny random model (cached for the session)."""
    made: dict[str, Path] = {}

    def make(variant: str = "qwen2") -> Path:
        if variant not in made:
            made[variant] = make_hf_checkpoint(variant, tmp_path_factory.mktemp(variant))
        return made[variant]

    return make


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory):
    """Factory: (variant, qtype) -> GGUF file converted from the tiny HF checkpoint."""
    made: dict[tuple, Path] = {}

    def make(variant: str = "qwen2", qtype=None) -> Path:
        from gguf import GGMLQuantizationType

        qtype = qtype or GGMLQuantizationType.F32
        if (variant, qtype) not in made:
            out = tmp_path_factory.mktemp(f"{variant}-gguf") / f"{variant}-{qtype.name}.gguf"
            made[(variant, qtype)] = write_gguf(tiny_model_dir(variant), out, qtype)
        return made[(variant, qtype)]

    return make


@pytest.fixture(scope="session")
def real_gguf() -> Path:
    """The real default model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M)."""
    path = os.environ.get("QWEN_LSP_TEST_GGUF")
    if not path:
        pytest.skip("real-model tier deselected")
    return Path(path)


@pytest.fixture(scope="session")
def real_gguf_path(real_gguf) -> str:
    """The real default model's path as a string."""
    return str(real_gguf)


@pytest.fixture(scope="session")
def tiny_server_model(tiny_model_dir) -> str:
    """The tiny random Qwen2 with a long context, as the server's ``--model`` (mechanics tests)."""
    return str(tiny_model_dir("qwen2_long"))


@pytest.fixture(scope="session")
def native_ops():
    """The native GGML-block ops, built once into the qwen-lsp cache (skips where no compiler works)."""
    from inference.kernels.native_build import native_ops as load

    ops = load()
    if ops is None:
        pytest.skip("native kernels could not be built here")
    return ops
