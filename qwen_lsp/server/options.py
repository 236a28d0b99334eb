"""Command-line options of the server and starting it (stdio or TCP)."""

from __future__ import annotations

import argparse
import logging
import sys

from qwen_lsp.server.settings import Settings


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--model``, ``--tcp HOST:PORT`` and ``--log-file`` to ``parser``."""
    parser.add_argument("--model", default=None, help='model name ("default"), .gguf path or HF model dir')
    parser.add_argument("--tcp", metavar="HOST:PORT", default=None, help="listen on TCP instead of stdio (debugging)")
    parser.add_argument("--log-file", default=None, help="write the server log here (default: stderr)")
    parser.add_argument("--log-level", default="info", choices=["error", "warning", "info", "debug"])


def _tcp_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise SystemExit(f"--tcp expects HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def run_server(options: argparse.Namespace) -> None:
    """Start the language server with parsed ``options``; returns when the client exits."""
    from qwen_lsp.server.server import build_server

    handler: logging.Handler = logging.FileHandler(options.log_file) if options.log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    level = getattr(options, "log_level", "info")
    logging.getLogger("qwen_lsp").setLevel(level.upper())
    settings = Settings(model=options.model or "default", log_level=level)
    server = build_server(settings)
    if options.tcp:
        host, port = _tcp_address(options.tcp)
        server.start_tcp(host, port)
    else:
        server.start_io()
