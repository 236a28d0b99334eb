"""VS Code (code-server 4.100.3, headless chromium) with the packaged extension against the real
server: type in a Python file, ghost text appears (.ghost-text-decoration), Tab inserts it."""

from __future__ import annotations

import pytest

from editor_common import require, server_command
from vscode_driver import CODE_SERVER, VSCODE, CodeServer, package_extension, settings_for


@pytest.fixture(scope="module")
def vsix():
    require("node")
    require(CODE_SERVER)
    require("/usr/bin/chromium")
    if not (VSCODE / "node_modules").is_dir():
        require(VSCODE / "node_modules" / ".bin" / "tsc")
    return package_extension()


def run(tmp_path, workspace, model, server_settings: dict, typed: str, timeout_s: float, shot):
    settings = settings_for(server_command(model, tmp_path / "server.log"), server_settings)
    with CodeServer(tmp_path, settings, workspace) as code:
        result = code.type_and_accept("main.py", typed, shot or tmp_path / "vscode.png", timeout_s)
    assert "error" not in result, f"{result}; screenshot {shot or tmp_path / 'vscode.png'}"
    return result


def test_ghost_text_accepted_with_tab_on_tiny_model(vsix, workspace, tiny_model, tmp_path):
    typed = (workspace / "main.py").read_text() + "area = circle_"
    result = run(tmp_path, workspace, tiny_model, {"maxTokens": 6, "debounceMs": 0}, "area = circle_", 180, None)
    assert any(result["ghost"]), result
    saved = (workspace / "main.py").read_text()  # random weights: some text was inserted after the typed part
    assert saved.startswith(typed) and len(saved) > len(typed)


@pytest.mark.real_model
def test_real_model_ghost_text_in_vscode(vsix, workspace, real_gguf, tmp_path, screenshot_dir):
    (workspace / "main.py").write_text("from shapes import circle_area\n\n\ndef rectangle_area(width, height):\n    ")
    shot = screenshot_dir / "vscode.png" if screenshot_dir else None
    result = run(tmp_path, workspace, real_gguf, {"maxTokens": 12, "timeBudgetMs": 60000}, "return ", 400, shot)
    ghost = result["ghost"][0]
    assert "width" in ghost and "height" in ghost, result
    assert (workspace / "main.py").read_text().split("\n")[4] == "    return " + ghost
