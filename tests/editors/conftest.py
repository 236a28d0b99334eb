"""Fixtures of the real-editor tests: a small workspace, the tiny model, the screenshot folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from editor_common import WORKSPACE_FILES  # noqa: E402


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A small Python project with a .git marker."""
    root = tmp_path / "project"
    (root / ".git").mkdir(parents=True)
    for name, text in WORKSPACE_FILES.items():
        (root / name).write_text(text)
    return root


@pytest.fixture
def screenshot_dir() -> Path | None:
    """Where tests leave screenshots (QWEN_LSP_SCREENSHOTS), or None."""
    value = os.environ.get("QWEN_LSP_SCREENSHOTS")
    return Path(value) if value else None


@pytest.fixture
def tiny_model(tiny_model_dir) -> Path:
    return tiny_model_dir("qwen2")
