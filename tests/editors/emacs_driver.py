"""Runs Emacs with eglot and qwen-lsp.el on a file, typing and pressing keys (qwen-lsp-test.el)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from editor_common import EDITORS, editor_env, missing
from tmux_terminal import TmuxTerminal

SCRIPT = Path(__file__).with_name("qwen-lsp-test.el")
DEBIAN_ELPA = Path("/usr/share/emacs/site-lisp/elpa")  # qwen-lsp-test.el puts its packages on the load path


def require_elpa(package: str) -> None:
    """Fail (CI) or skip unless Debian's elpa-PACKAGE is installed."""
    if not any(DEBIAN_ELPA.glob(f"{package}-[0-9]*")):
        missing(f"elpa-{package}")


def elisp(value) -> str:
    """A Lisp literal for a str, a list of str or a dict (as a plist)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "'(" + " ".join(f":{k} {json.dumps(v)}" for k, v in value.items()) + ")"
    return "'(" + " ".join(json.dumps(v) for v in value) + ")"


def emacs_args(tmp: Path, server_cmd: list[str], settings: dict, file: Path, typed: str, steps: list[str],
               timeout: float, latency_line: str = "", key_timeout: float = 30,
               client: str = "eglot") -> tuple[list[str], Path]:
    """The Emacs arguments (after ``emacs``) and the events file the run writes."""
    events = tmp / "emacs-events.jsonl"
    setup = tmp / "emacs-setup.el"
    setup.write_text(
        f"(setq qwen-lsp-command {elisp(server_cmd)} qwen-lsp-settings {elisp(settings)}\n"
        f"      qwen-test-file {elisp(str(file))} qwen-test-typed {elisp(typed)}\n"
        f"      qwen-test-steps '({' '.join(steps)}) qwen-test-events {elisp(str(events))}\n"
        f"      qwen-test-timeout {timeout} qwen-lsp-request-timeout {timeout} eglot-sync-connect nil\n"
        f"      qwen-test-latency-line {elisp(latency_line)} qwen-test-key-timeout {key_timeout}\n"
        f"      qwen-test-client '{client}\n"
        f"      native-comp-deferred-compilation nil)\n"
    )
    return ["-Q", "-L", str(EDITORS / "emacs"), "-l", str(setup), "-l", str(SCRIPT)], events


def read_events(events: Path) -> list[dict]:
    return [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []


def run_batch(emacs: str, args: list[str], events: Path, cwd: Path, timeout: float) -> list[dict]:
    """Run Emacs in batch mode; the events, or an AssertionError with its output."""
    proc = subprocess.run([emacs, "--batch", *args], cwd=cwd, env=editor_env(), capture_output=True, text=True,
                          timeout=timeout)
    found = read_events(events)
    assert proc.returncode == 0, f"emacs exited {proc.returncode}: {found[-1:]}\n{proc.stderr[-3000:]}"
    return found


def run_in_tmux(emacs: str, args: list[str], events: Path, cwd: Path, timeout: float, shot: Path | None) -> list[dict]:
    """Run ``emacs -nw`` in tmux; at the ``pause`` step take the screenshot ``shot``."""
    with TmuxTerminal([emacs, "-nw", *args], editor_env(), cwd) as term:
        deadline = time.monotonic() + timeout
        while not any(e["event"] in ("done", "timeout") for e in read_events(events)):
            if any(e.get("step") == "pause" and e["event"] == "before" for e in read_events(events)):
                marker = Path(str(events) + ".shot")
                if not marker.exists():
                    time.sleep(0.5)
                    if shot:
                        term.screenshot(shot)
                    marker.write_text("")
            assert time.monotonic() < deadline, f"emacs timed out:\n{term.screen()}"
            time.sleep(0.2)
    return read_events(events)
