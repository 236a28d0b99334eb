"""Keystroke-to-ghost-text latency as each real editor sees it, on the real 0.5B model.

Each editor opens the same file, then a line is typed key by key; after each key the time
until ghost text is on screen (extmarks in Neovim, the overlay in Emacs, .ghost-text-decoration
in VS Code) is taken, waiting for it before the next key. Two lines (scenarios): ``predicted``, one
the model suggests after its first key (most keys type through the shown suggestion), and
``fresh``, one it does not guess (most keys change what the model must predict). Prints p50/p90 per
editor, over all keys and over the keys whose ghost text had to come from the server (not kept on
screen while typing through it); and, from scripts/lsp_tap.py between editor and server, how the
server answered: from its cache or from the model, with the server's own milliseconds.
Usage (after scripts/setup-editors):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/editor_latency.py \
        [--editors nvim-0.12,nvim-0.7,emacs,vscode] [--scenarios predicted,fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests" / "editors")]

from editor_common import WORKSPACE_FILES, server_command  # noqa: E402

FILE = "def rectangle_area(width, height):\n    \n"
SCENARIOS = {"predicted": "return width * height", "fresh": "zq = height % 7 - width"}
TAP = Path(__file__).with_name("lsp_tap.py")
SETTINGS = {"maxTokens": 16, "timeBudgetMs": 60000}


def workspace(tmp: Path) -> Path:
    root = tmp / "project"
    (root / ".git").mkdir(parents=True)
    for name, text in {**WORKSPACE_FILES, "rect.py": FILE}.items():
        (root / name).write_text(text)
    return root


def tapped_server(model: str, tmp: Path) -> list[str]:
    """The server command behind scripts/lsp_tap.py, which logs its answers to tmp/answers.jsonl."""
    return [sys.executable, str(TAP), str(tmp / "answers.jsonl"), *server_command(model, tmp / "server.log")]


Latency = tuple[float | None, bool]  # seconds to ghost text (None: none came), shown at once (typed through)


# Neovim 0.12's built-in client keeps showing the previous item, shifted, after a key that does not
# match it, until its next answer (200 ms debounce): there, a key's ghost text counts once an
# inlineCompletion request sent after the key has been answered.
FRESH_ANSWERS_LUA = """
_G.qwen_latency = { ids = {}, answered = false }
vim.api.nvim_create_autocmd('LspRequest', { callback = function(args)
  local request = args.data.request
  if request.method ~= 'textDocument/inlineCompletion' then return end
  if request.type == 'pending' then qwen_latency.ids[args.data.request_id] = true
  elseif request.type == 'complete' and qwen_latency.ids[args.data.request_id] then qwen_latency.answered = true end
end })
"""


def nvim_latencies(binary: str, model: str, line: str, tmp: Path, timeout: float) -> list[Latency]:
    from nvim_driver import Neovim, write_init

    root = workspace(tmp)
    init = write_init(tmp / "init.lua", tapped_server(model, tmp), SETTINGS)
    found: list[Latency] = []
    with Neovim(binary, init, root / "rect.py", root) as nv:
        nv.wait_ready(timeout=600)
        native = nv.lua("return vim.lsp.inline_completion ~= nil")
        if native:
            nv.lua(FRESH_ANSWERS_LUA)
        nv.api.input("2GA")
        for i, ch in enumerate(line):
            typed_through = nv.ghost().startswith(ch)
            nv.lua("if qwen_latency then qwen_latency.ids, qwen_latency.answered = {}, false end")
            start = time.monotonic()
            nv.api.input(ch)
            while nv.lines()[1] != "    " + line[: i + 1]:  # the key is in the buffer
                time.sleep(0.002)

            def shown() -> bool:
                return bool(nv.ghost()) and (typed_through or not native or nv.lua("return qwen_latency.answered"))

            while not shown() and time.monotonic() - start < timeout:
                time.sleep(0.005)
            found.append((time.monotonic() - start if shown() else None, typed_through))
    return found


def emacs_latencies(model: str, line: str, tmp: Path, timeout: float) -> list[Latency]:
    from emacs_driver import emacs_args, run_batch

    root = workspace(tmp)
    (root / "rect.py").write_text(FILE.rstrip("\n"))  # Emacs types at the end of the buffer
    args, events = emacs_args(tmp, tapped_server(model, tmp), SETTINGS, root / "rect.py", "",
                              ["latency"], timeout=600, latency_line=line, key_timeout=timeout)
    return [(e["seconds"], e["kept"]) for e in run_batch("emacs", args, events, root, timeout=3600)
            if e["event"] == "key"]


def vscode_latencies(model: str, line: str, tmp: Path, timeout: float) -> list[Latency]:
    from vscode_driver import CodeServer, package_extension, settings_for

    root = workspace(tmp)
    (root / "main.py").write_text(FILE.rstrip("\n"))
    package_extension()
    with CodeServer(tmp, settings_for(tapped_server(model, tmp), SETTINGS), root) as code:
        result = code.latencies("main.py", line, timeout)
    assert "error" not in result, result
    return [(None if ms is None else ms / 1000, kept) for ms, kept in result["latencies"]]


def percentiles(values: list[float]) -> str:
    if not values:
        return "none"
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"p50 {statistics.median(values) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms (n={len(values)})"


def server_answers(answers: Path) -> str:
    """The server's inline answers by source (the change in its counters since the previous answer)."""
    records = [json.loads(line) for line in answers.read_text().splitlines()] if answers.exists() else []
    by_source: dict[str, list[float]] = {"cache": [], "model": [], "dropped or empty": []}
    before: dict = {}
    for record in records:
        stats = record["stats"] or {}
        grew = {key: stats.get(key, 0) - before.get(key, 0) for key in ("cache_hits", "model_calls")}
        before = stats
        source = "model" if grew["model_calls"] else "cache" if grew["cache_hits"] and record["items"] else None
        by_source[source or "dropped or empty"].append(record["ms"] / 1000)
    return f"server answers {len(records)}: " + "; ".join(f"{name} {percentiles(ms)}" for name, ms in by_source.items())


def report(name: str, latencies: list[Latency], answers: Path) -> None:
    """All keys as the user sees them, the keys whose ghost text had to come from the server, and
    how the server answered."""
    seen = [s for s, _ in latencies if s is not None]
    fetched = [s for s, kept in latencies if s is not None and not kept]
    print(f"{name}: all keys {percentiles(seen)}; fetched {percentiles(fetched)}; "
          f"kept while typing through {sum(kept for _, kept in latencies)}, no ghost text "
          f"{sum(s is None for s, _ in latencies)} of {len(latencies)} keys; {server_answers(answers)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--editors", default="nvim-0.12,nvim-0.7,emacs,vscode")
    parser.add_argument("--scenarios", default="predicted,fresh", help=f"of {', '.join(SCENARIOS)}")
    parser.add_argument("--model", default=str(Path.home() / ".cache/qwen-lsp/models/qwen2.5-coder-0.5b/"
                                               "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for ghost text per key")
    args = parser.parse_args()
    runners = {
        "nvim-0.12": lambda line, tmp: nvim_latencies(str(Path(sys.executable).parent / "nvim"), args.model, line,
                                                      tmp, args.timeout),
        "nvim-0.7": lambda line, tmp: nvim_latencies("/usr/bin/nvim", args.model, line, tmp, args.timeout),
        "emacs": lambda line, tmp: emacs_latencies(args.model, line, tmp, args.timeout),
        "vscode": lambda line, tmp: vscode_latencies(args.model, line, tmp, args.timeout),
    }
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs", flush=True)
    for scenario in args.scenarios.split(","):
        for name in args.editors.split(","):
            tmp = Path(tempfile.mkdtemp(prefix=f"latency-{name}-"))
            try:
                report(f"{name} {scenario} {SCENARIOS[scenario]!r}", runners[name](SCENARIOS[scenario], tmp),
                       tmp / "answers.jsonl")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
