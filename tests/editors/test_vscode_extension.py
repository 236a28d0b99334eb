"""The VS Code extension type-checks (tsc strict), lints (eslint) and passes its unit tests."""

from __future__ import annotations

import subprocess

import pytest

from editor_common import require
from vscode_driver import VSCODE


@pytest.mark.parametrize("script", ["lint", "test"])
def test_npm_script(script):
    require("npm")
    require(VSCODE / "node_modules" / ".bin" / "tsc")
    proc = subprocess.run(["npm", "run", script], cwd=VSCODE, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
