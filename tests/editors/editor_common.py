"""Shared pieces of the real-editor tests: finding editors, the server command, the workspace files."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EDITORS = REPO / "editors"

WORKSPACE_FILES = {
    "shapes.py": (
        "import math\n\n\n"
        "def circle_area(radius):\n    return math.pi * radius ** 2\n\n\n"
        "def square_area(side):\n    return side * side\n"
    ),
    "main.py": "from shapes import circle_area, square_area\n\n",
}


def missing(what: str) -> None:
    """A missing editor part fails under CI=true and skips elsewhere."""
    message = f"{what} is not installed (scripts/setup-editors installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def require(binary: str | Path) -> str:
    """The editor binary's path (see ``missing`` when there is none)."""
    found = shutil.which(str(binary))
    if not found:
        missing(str(binary))
    return found


def server_command(model: str | Path, log_file: Path, *extra: str) -> list[str]:
    """The command an editor runs to start the server from this checkout."""
    return [sys.executable, "-m", "qwen_lsp.server", "--model", str(model), "--log-file", str(log_file),
            "--log-level", "debug", *extra]


def editor_env() -> dict[str, str]:
    """Environment for editors (and so the server they start): this checkout, quiet OpenMP."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env.setdefault("OMP_NUM_THREADS", "2")
    return env
