"""Shared fixtures: the real-model tier reads its GGUF path from QWEN_LSP_TEST_GGUF."""

from __future__ import annotations

import os

import pytest

REAL_GGUF_ENV = "QWEN_LSP_TEST_GGUF"


@pytest.fixture(scope="session")
def real_gguf_path() -> str:
    """Path of a real Qwen GGUF model; skips the test when QWEN_LSP_TEST_GGUF is unset."""
    path = os.environ.get(REAL_GGUF_ENV)
    if not path:
        pytest.skip(f"{REAL_GGUF_ENV} is not set")
    return path
