"""Keystroke-to-ghost-text latency as each real editor sees it, on the real 0.5B model.

Each editor opens the same file, then a line is typed key by key; after each key the time
until ghost text is on screen (extmarks in Neovim, the overlay in Emacs, .ghost-text-decoration
in VS Code) is taken, waiting for it before the next key. Prints p50/p90 per editor, over all keys and over the keys whose
ghost text had to come from the server (not kept on screen while typing through it). Usage (after scripts/setup-editors):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/editor_latency.py [--editors nvim-0.12,nvim-0.7,emacs,vscode]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests" / "editors")]

from editor_common import WORKSPACE_FILES, server_command  # noqa: E402

FILE = "def rectangle_area(width, height):\n    \n"
LINE = "return width * height"
SETTINGS = {"maxTokens": 16, "timeBudgetMs": 60000}


def workspace(tmp: Path) -> Path:
    root = tmp / "project"
    (root / ".git").mkdir(parents=True)
    for name, text in {**WORKSPACE_FILES, "rect.py": FILE}.items():
        (root / name).write_text(text)
    return root


Latency = tuple[float | None, bool]  # seconds to ghost text (None: none came), shown at once (typed through)


def nvim_latencies(binary: str, model: str, tmp: Path, timeout: float) -> list[Latency]:
    from nvim_driver import Neovim, write_init

    root = workspace(tmp)
    init = write_init(tmp / "init.lua", server_command(model, tmp / "server.log"), SETTINGS)
    found: list[Latency] = []
    with Neovim(binary, init, root / "rect.py", root) as nv:
        nv.wait_ready(timeout=600)
        nv.api.input("2GA")
        for i, ch in enumerate(LINE):
            start = time.monotonic()
            nv.api.input(ch)
            while nv.lines()[1] != "    " + LINE[: i + 1]:  # the key is in the buffer
                time.sleep(0.002)
            kept = bool(nv.ghost())
            while not nv.ghost() and time.monotonic() - start < timeout:
                time.sleep(0.005)
            found.append((time.monotonic() - start if nv.ghost() else None, kept))
    return found


def emacs_latencies(model: str, tmp: Path, timeout: float) -> list[Latency]:
    from emacs_driver import emacs_args, run_batch

    root = workspace(tmp)
    (root / "rect.py").write_text(FILE.rstrip("\n"))  # Emacs types at the end of the buffer
    args, events = emacs_args(tmp, server_command(model, tmp / "server.log"), SETTINGS, root / "rect.py", "",
                              ["latency"], timeout=600, latency_line=LINE, key_timeout=timeout)
    return [(e["seconds"], e["kept"]) for e in run_batch("emacs", args, events, root, timeout=3600)
            if e["event"] == "key"]


def vscode_latencies(model: str, tmp: Path, timeout: float) -> list[Latency]:
    from vscode_driver import CodeServer, package_extension, settings_for

    root = workspace(tmp)
    (root / "main.py").write_text(FILE.rstrip("\n"))
    package_extension()
    with CodeServer(tmp, settings_for(server_command(model, tmp / "server.log"), SETTINGS), root) as code:
        result = code.latencies("main.py", LINE, timeout)
    assert "error" not in result, result
    return [(None if ms is None else ms / 1000, kept) for ms, kept in result["latencies"]]


def percentiles(values: list[float]) -> str:
    if not values:
        return "none"
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"p50 {statistics.median(values) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms (n={len(values)})"


def report(name: str, latencies: list[Latency]) -> None:
    """All keys as the user sees them, and the keys whose ghost text had to come from the server."""
    seen = [s for s, _ in latencies if s is not None]
    fetched = [s for s, kept in latencies if s is not None and not kept]
    print(f"{name}: all keys {percentiles(seen)}; fetched {percentiles(fetched)}; "
          f"kept while typing through {sum(kept for _, kept in latencies)}, no ghost text "
          f"{sum(s is None for s, _ in latencies)} of {len(latencies)} keys")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--editors", default="nvim-0.12,nvim-0.7,emacs,vscode")
    parser.add_argument("--model", default=str(Path.home() / ".cache/qwen-lsp/models/qwen2.5-coder-0.5b/"
                                               "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for ghost text per key")
    args = parser.parse_args()
    runners = {
        "nvim-0.12": lambda tmp: nvim_latencies(str(Path(sys.executable).parent / "nvim"), args.model, tmp, args.timeout),
        "nvim-0.7": lambda tmp: nvim_latencies("/usr/bin/nvim", args.model, tmp, args.timeout),
        "emacs": lambda tmp: emacs_latencies(args.model, tmp, args.timeout),
        "vscode": lambda tmp: vscode_latencies(args.model, tmp, args.timeout),
    }
    for name in args.editors.split(","):
        tmp = Path(tempfile.mkdtemp(prefix=f"latency-{name}-"))
        try:
            report(name, runners[name](tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
