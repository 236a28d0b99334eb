"""Neovim against the real server: Debian's 0.7.2 (extmark ghost text) and 0.12 (built-in
vim.lsp.inline_completion), typing in insert mode, reading the ghost text from the extmarks."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from editor_common import require, server_command
from nvim_driver import Neovim, write_init

NVIMS = {"nvim-0.7": "/usr/bin/nvim", "nvim-0.12": str(Path(sys.executable).parent / "nvim")}


def next_word(rest: str) -> str:
    """Mirror of partial.next_word in the plugin."""
    match = re.match(r"\s*[A-Za-z0-9_]+", rest) or re.match(r"\s*[^A-Za-z0-9_\s]+", rest)
    return match.group(0) if match else rest


def text(nv: Neovim) -> str:
    return "\n".join(nv.lines())


@pytest.mark.parametrize("version", NVIMS)
def test_ghost_text_keys_on_tiny_model(version, workspace, tiny_model, tmp_path):
    binary = require(NVIMS[version])
    init = write_init(tmp_path / "init.lua", server_command(tiny_model, tmp_path / "server.log"),
                      {"maxTokens": 8, "debounceMs": 0})
    with Neovim(binary, init, workspace / "main.py", workspace) as nv:
        nv.wait_ready()
        nv.api.input("Go")
        nv.type("print(circle_")
        ghost = nv.wait_for("ghost text", nv.ghost, 60)
        before = text(nv)
        nv.api.input("<M-Right>")  # accept one word
        nv.wait_for("a word accepted", lambda: text(nv) != before, 10)
        assert text(nv) == before + next_word(ghost)

        nv.api.input("<Esc>")  # dismiss by leaving insert mode
        nv.wait_for("the ghost text to go", lambda: nv.ghost() == "", 10)
        nv.api.input("A")
        ghost = nv.wait_for("ghost text again", nv.ghost, 60)
        before = text(nv)
        nv.api.input("<Tab>")  # accept all
        nv.wait_for("the suggestion accepted", lambda: text(nv) != before, 10)
        assert text(nv) == before + ghost

        nv.api.input("<Esc>")
        nv.api.command("QwenLspPrompt")
        assert "<|fim_middle|>" in text(nv) and "print(circle_" in text(nv)


@pytest.mark.real_model
def test_real_model_completion_in_nvim_012(workspace, real_gguf, tmp_path, screenshot_dir):
    binary = require(NVIMS["nvim-0.12"])
    (workspace / "rect.py").write_text("def rectangle_area(width, height):\n    \n")
    init = write_init(tmp_path / "init.lua", server_command(real_gguf, tmp_path / "server.log"),
                      {"maxTokens": 12, "timeBudgetMs": 60000})
    with Neovim(binary, init, workspace / "rect.py", workspace) as nv:
        nv.wait_ready(timeout=300)
        nv.api.input("2GA")
        nv.type("return ")
        ghost = nv.wait_for("ghost text from the 0.5B", nv.ghost, 300)
        if screenshot_dir:
            nv.terminal.screenshot(screenshot_dir / "neovim.png")
        assert "width" in ghost and "height" in ghost, ghost
        nv.api.input("<Tab>")
        nv.wait_for("the suggestion accepted", lambda: nv.lines()[1] != "    return ", 10)
        assert nv.lines()[1] == "    return " + ghost.split("\n")[0]
