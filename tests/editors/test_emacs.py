"""Emacs 28 with eglot 1.9 and qwen-lsp.el against the real server: ghost text arrives as an
overlay, M-f accepts a word, C-g dismisses, M-i asks by hand, TAB inserts it."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from editor_common import EDITORS, require, server_command
from emacs_driver import emacs_args, require_elpa, run_batch, run_in_tmux


def step(events: list[dict], name: str, when: str) -> dict:
    return next(e for e in events if e.get("step") == name and e["event"] == when)


def inserted(state: dict, text: str) -> str:
    """The buffer of ``state`` with ``text`` inserted at its point."""
    at = state["point"] - 1
    return state["buffer"][:at] + text + state["buffer"][at:]


def next_word(rest: str) -> str:
    """Mirror of qwen-lsp--next-word."""
    match = re.match(r"[ \t\n]*(?:\w+|[^\w \t\n]+)", rest)
    return match.group(0) if match else rest


def test_ghost_text_keys_on_tiny_model(workspace, tiny_model, tmp_path):
    emacs = require("emacs")
    args, events_file = emacs_args(tmp_path, server_command(tiny_model, tmp_path / "server.log"),
                                   {"maxTokens": 8, "debounceMs": 0}, workspace / "main.py", "print(circle_",
                                   ["accept-word", "dismiss", "trigger", "accept"], timeout=120)
    events = run_batch(emacs, args, events_file, workspace, timeout=400)
    assert events[0] == {"event": "status", "state": "ready", "message": events[0]["message"]}

    before, after = step(events, "accept-word", "before"), step(events, "accept-word", "after")
    assert before["ghost"] and after["buffer"] == inserted(before, next_word(before["ghost"]))

    assert step(events, "dismiss", "before")["visible"] and not step(events, "dismiss", "after")["visible"]

    before, after = step(events, "accept", "before"), step(events, "accept", "after")
    assert step(events, "trigger", "before")["ghost"] is None and before["ghost"]
    assert after["buffer"] == inserted(before, before["ghost"])
    assert after["point"] == before["point"] + len(before["ghost"])
    assert events[-1]["event"] == "done"


def test_package_compiles_without_warnings_and_loads_without_eglot_or_lsp_mode(tmp_path):
    """Byte-compiled with warnings as errors and loaded in an Emacs with neither client: both
    client paths compile, and nothing needs eglot or lsp-mode before one of them is loaded."""
    emacs = require("emacs")
    source = shutil.copy(EDITORS / "emacs" / "qwen-lsp.el", tmp_path)

    def batch(*args: str) -> str:
        proc = subprocess.run([emacs, "-Q", "--batch", "-L", str(tmp_path), *args], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    batch("--eval", "(setq byte-compile-error-on-warn t)", "-f", "batch-byte-compile", str(source))
    loaded = batch("--eval", "(progn (require 'qwen-lsp) (with-temp-buffer (qwen-lsp-mode 1))"
                             " (prin1 (list (symbol-file 'qwen-lsp-mode) (featurep 'eglot) (featurep 'lsp-mode))))")
    assert loaded == f'("{tmp_path}/qwen-lsp.elc" nil nil)'


def test_lsp_mode_registration_on_tiny_model(workspace, tiny_model, tmp_path):
    """lsp-mode (8.0, Debian) starts qwen-lsp as the add-on client qwen-lsp.el registers; ghost text
    comes through lsp-mode's requests, and M-f and TAB insert it."""
    emacs = require("emacs")
    require_elpa("lsp-mode")
    args, events_file = emacs_args(tmp_path, server_command(tiny_model, tmp_path / "server.log"),
                                   {"maxTokens": 8, "debounceMs": 0}, workspace / "main.py", "print(circle_",
                                   ["accept-word", "accept"], timeout=120, client="lsp-mode")
    events = run_batch(emacs, args, events_file, workspace, timeout=400)
    assert events[0] == {"event": "status", "state": "ready", "message": events[0]["message"]}

    before, after = step(events, "accept-word", "before"), step(events, "accept-word", "after")
    assert before["ghost"] and after["buffer"] == inserted(before, next_word(before["ghost"]))

    before, after = step(events, "accept", "before"), step(events, "accept", "after")
    assert after["buffer"] == inserted(before, before["ghost"])
    assert events[-1]["event"] == "done"


@pytest.mark.real_model
def test_real_model_completion_in_emacs(workspace, real_gguf, tmp_path, screenshot_dir):
    emacs = require("emacs")
    require("tmux")
    (workspace / "rect.py").write_text("def rectangle_area(width, height):\n    ")
    args, events_file = emacs_args(tmp_path, server_command(real_gguf, tmp_path / "server.log"),
                                   {"maxTokens": 12, "timeBudgetMs": 60000}, workspace / "rect.py", "return ",
                                   ["pause", "accept"], timeout=300)
    shot = screenshot_dir / "emacs.png" if screenshot_dir else None
    events = run_in_tmux(emacs, args, events_file, workspace, timeout=700, shot=shot)
    assert events[-1]["event"] == "done", events[-1]
    before, after = step(events, "accept", "before"), step(events, "accept", "after")
    assert "width" in before["ghost"] and "height" in before["ghost"], before["ghost"]
    assert after["buffer"] == inserted(before, before["ghost"])
