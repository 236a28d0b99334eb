"""A real Neovim in tmux with the plugin loaded, driven over its RPC socket (pynvim)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pynvim

from editor_common import EDITORS, editor_env
from tmux_terminal import TmuxTerminal

GHOST_LUA = """
local name = vim.lsp.inline_completion and 'nvim.lsp.inline_completion' or 'qwen_lsp_ghost'
local ns = vim.api.nvim_get_namespaces()[name]
if not ns then return '' end
local lines = {}
for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do
  local first = {}
  for _, chunk in ipairs(mark[4].virt_text or {}) do
    if chunk[2] ~= 'ComplHintMore' and chunk[2] ~= 'QwenLspGhostHint' then table.insert(first, chunk[1]) end
  end
  table.insert(lines, table.concat(first))
  for _, line in ipairs(mark[4].virt_lines or {}) do
    local parts = {}
    for _, chunk in ipairs(line) do
      if chunk[2] ~= 'ComplHintMore' and chunk[2] ~= 'QwenLspGhostHint' then table.insert(parts, chunk[1]) end
    end
    table.insert(lines, table.concat(parts))
  end
end
return table.concat(lines, '\\n')
"""


def write_init(path: Path, server_cmd: list[str], settings: dict) -> Path:
    """An init.lua that loads only this plugin, set up for ``server_cmd``."""
    lua_list = "{" + ", ".join(json.dumps(a) for a in server_cmd) + "}"
    lua_settings = "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in settings.items()) + "}"
    path.write_text(
        f"vim.opt.runtimepath:prepend({json.dumps(str(EDITORS / 'neovim'))})\n"
        "vim.o.swapfile = false\nvim.o.termguicolors = true\nvim.o.shortmess = vim.o.shortmess .. 'I'\nvim.cmd('syntax on')\n"
        f"require('qwen_lsp').setup({{ cmd = {lua_list}, settings = {lua_settings} }})\n"
    )
    return path


class Neovim:
    """``with Neovim(binary, init, file, cwd) as nv``: nv.api is a pynvim session."""

    def __init__(self, binary: str, init: Path, file: Path, cwd: Path):
        self.socket = cwd.parent / f"nvim-{init.stem}.sock"
        self.terminal = TmuxTerminal([binary, "--listen", str(self.socket), "-i", "NONE", "-u", str(init), str(file)],
                                     editor_env(), cwd)

    def __enter__(self) -> "Neovim":
        self.terminal.__enter__()
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"nvim did not listen:\n{self.terminal.screen()}")
            time.sleep(0.1)
        while True:  # the socket file can appear before nvim serves it
            try:
                self.api = pynvim.attach("socket", path=str(self.socket))
                self.api.api.get_mode()
                return self
            except (OSError, EOFError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        try:
            self.api.close()
        finally:
            self.terminal.__exit__(*exc)

    def lua(self, code: str, *args):
        return self.api.exec_lua(code, *args)

    def wait_for(self, what: str, probe, timeout: float, interval: float = 0.05):
        """Poll ``probe()`` until it returns something truthy; fail with the screen after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{self.terminal.screen()}")
            time.sleep(interval)

    def status(self) -> str:
        return self.lua("return require('qwen_lsp.status').state")

    def wait_ready(self, timeout: float = 180) -> None:
        self.wait_for("the server to load its model", lambda: self.status() in ("ready", "error"), timeout)
        assert self.status() == "ready", self.lua("return require('qwen_lsp.status').message")

    def ghost(self) -> str:
        return self.lua(GHOST_LUA)

    def lines(self) -> list[str]:
        return self.api.current.buffer[:]

    def type(self, text: str, delay: float = 0.05) -> None:
        """Type ``text`` key by key (``<`` as ``<lt>``)."""
        for ch in text:
            self.api.input("<lt>" if ch == "<" else ch)
            time.sleep(delay)
