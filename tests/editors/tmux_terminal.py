"""A program running in a detached tmux session: its screen can be read and saved as a PNG."""

from __future__ import annotations

import shlex
import subprocess
import uuid
from pathlib import Path

from ansi_png import render_png


class TmuxTerminal:
    """``with TmuxTerminal(argv, env, cwd) as term``: a 100x24 terminal running ``argv``."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, width: int = 100, height: int = 24):
        self.name = f"qwen-{uuid.uuid4().hex[:8]}"
        self.argv, self.cwd, self.size = argv, cwd, (width, height)
        self.env = {**env, "TERM": "xterm-256color"}

    def __enter__(self) -> "TmuxTerminal":
        command = "exec env " + " ".join(shlex.quote(f"{k}={v}") for k, v in self.env.items() if "\n" not in v)
        command += " " + " ".join(shlex.quote(a) for a in self.argv)
        subprocess.run(["tmux", "-L", self.name, "-f", "/dev/null", "new-session", "-d", "-s", self.name,
                        "-x", str(self.size[0]), "-y", str(self.size[1]), "-c", str(self.cwd), command], check=True)
        subprocess.run(["tmux", "-L", self.name, "set-option", "-g", "status", "off"], check=True)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], check=False, capture_output=True)

    def send_keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.name, "send-keys", "-t", self.name, *keys], check=True)

    def screen(self, ansi: bool = False) -> str:
        args = ["tmux", "-L", self.name, "capture-pane", "-p", "-t", self.name] + (["-e"] if ansi else [])
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout

    def screenshot(self, path: Path) -> Path:
        """Save the screen, colours included, as a PNG at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        render_png(self.screen(ansi=True), self.size, path)
        return path
