"""code-server (VS Code 1.100 in the browser) with the packaged extension, driven by puppeteer."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from editor_common import EDITORS, editor_env

VSCODE = EDITORS / "vscode"
CODE_SERVER = VSCODE / ".code-server" / "node_modules" / ".bin" / "code-server"
VSIX = VSCODE / "out" / "qwen-lsp.vsix"


def package_extension() -> Path:
    """Compile and package the extension (``npm run package``)."""
    subprocess.run(["npm", "run", "package"], cwd=VSCODE, check=True, capture_output=True, timeout=300)
    return VSIX


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CodeServer:
    """``with CodeServer(tmp, settings, folder) as cs``: cs.url opens ``folder``."""

    def __init__(self, tmp: Path, settings: dict, folder: Path):
        self.tmp, self.folder, self.port = tmp, folder, free_port()
        self.dirs = ["--user-data-dir", str(tmp / "user-data"), "--extensions-dir", str(tmp / "extensions")]
        (tmp / "user-data" / "User").mkdir(parents=True, exist_ok=True)
        (tmp / "user-data" / "User" / "settings.json").write_text(json.dumps(settings, indent=1))
        (tmp / "config.yaml").write_text("auth: none\ncert: false\n")
        self.log = tmp / "code-server.log"

    def __enter__(self) -> "CodeServer":
        subprocess.run([str(CODE_SERVER), *self.dirs, "--install-extension", str(VSIX)], check=True,
                       capture_output=True, timeout=120, env=editor_env())
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [str(CODE_SERVER), "--auth", "none", "--bind-addr", f"127.0.0.1:{self.port}", "--config",
                 str(self.tmp / "config.yaml"), *self.dirs, "--disable-telemetry", "--disable-update-check",
                 "--disable-workspace-trust", "--disable-getting-started-override", str(self.folder)],
                stdout=log, stderr=subprocess.STDOUT, env=editor_env())
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2)
                return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.__exit__()
                    raise RuntimeError(f"code-server did not start:\n{self.log.read_text()[-2000:]}")
                time.sleep(0.3)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?folder={self.folder}"

    def node(self, script: str, *args: str, timeout_s: float) -> dict:
        """Run an e2e script with the workbench URL; its last JSON line."""
        proc = subprocess.run(["node", f"e2e/{script}", self.url, *args], cwd=VSCODE, capture_output=True,
                              text=True, timeout=timeout_s)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        assert lines, f"{script} printed nothing:\n{proc.stderr[-3000:]}"
        return json.loads(lines[-1])

    def type_and_accept(self, file: str, text: str, screenshot: Path, timeout_s: float) -> dict:
        """Type ``text`` at the end of ``file``, take ``screenshot``, Tab, save: ``ghost`` lines or ``error``."""
        return self.node("ghost.mjs", file, text, str(screenshot), str(int(timeout_s * 1000)),
                         timeout_s=timeout_s + 120)

    def latencies(self, file: str, line: str, timeout_s: float) -> dict:
        """Type ``line`` key by key: ``latencies`` (ms to ghost text per key, None when none) or ``error``."""
        return self.node("latency.mjs", file, line, str(int(timeout_s * 1000)),
                         timeout_s=timeout_s * len(line) + 720)


def settings_for(server_cmd: list[str], server_settings: dict) -> dict:
    """User settings: the server command, its settings, and a quiet editor."""
    return {
        "qwenLsp.serverPath": server_cmd[0], "qwenLsp.serverArgs": server_cmd[1:],
        **{f"qwenLsp.{k}": v for k, v in server_settings.items()},
        "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
        "editor.suggestOnTriggerCharacters": False, "editor.wordBasedSuggestions": "off",
        "workbench.startupEditor": "none", "security.workspace.trust.enabled": False,
        "workbench.tips.enabled": False, "extensions.ignoreRecommendations": True,
        "telemetry.telemetryLevel": "off",
    }
