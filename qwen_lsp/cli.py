"""The `qwen-lsp` command: its subcommands are wired here, each lives in its own module."""

from __future__ import annotations

import argparse
import sys

from .cli_bench import add_bench_command
from .cli_context import add_complete_command, add_eval_command
from .cli_generate import add_generate_command
from .cli_model import add_model_commands
from .cli_serve import add_serve_command
from .server.options import add_server_arguments, run_server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen-lsp",
        description="Local, repo-aware code completion with Qwen-Coder models. "
        "With no command, runs the language server on stdio (the same as `qwen-lsp serve`).",
    )
    add_server_arguments(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_generate_command(subparsers)
    add_model_commands(subparsers)
    add_serve_command(subparsers)
    add_complete_command(subparsers)
    add_eval_command(subparsers)
    add_bench_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from inference.errors import ModelError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        run_server(args)
        return 0
    try:
        return args.run(args)
    except ModelError as exc:
        print(f"qwen-lsp: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"qwen-lsp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
