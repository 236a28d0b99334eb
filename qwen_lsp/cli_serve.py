"""`qwen-lsp serve`: run the language server (stdio unless ``--tcp``), the command editors start."""

from __future__ import annotations

import argparse

from qwen_lsp.server.options import add_server_arguments, run_server


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` command to `subparsers`."""
    serve = subparsers.add_parser("serve", help="run the language server on stdio (what editors start)")
    add_server_arguments(serve)
    serve.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    run_server(args)
    return 0
