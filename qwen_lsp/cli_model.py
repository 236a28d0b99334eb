"""`qwen-lsp model pull NAME` and `qwen-lsp model list [--json]`."""

from __future__ import annotations

import argparse
import json
import sys


def add_model_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the `model` command group to `subparsers`.

    Each command sets `args.run`, a function taking the parsed args and returning an exit code.
    """
    model = subparsers.add_parser("model", help="download and list known models")
    commands = model.add_subparsers(dest="model_command", required=True)

    pull_command = commands.add_parser("pull", help="download a known model into the cache")
    pull_command.add_argument("name", help="a model name or alias, as shown by `model list`")
    pull_command.set_defaults(run=_run_pull)

    list_command = commands.add_parser("list", help="show the known models and which are downloaded")
    list_command.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    list_command.set_defaults(run=_run_list)


def _run_pull(args: argparse.Namespace) -> int:
    from inference.errors import ModelNotFoundError
    from inference.model_store import pull

    try:
        path = pull(args.name)
    except ModelNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _run_list(args: argparse.Namespace) -> int:
    from inference.model_store import list_models

    models = list_models()
    if args.json:
        entries = [{**vars(info), "aliases": list(info.aliases), "path": str(info.path)} for info in models]
        print(json.dumps(entries, indent=2))
        return 0
    width = max(len(info.name) for info in models)
    for info in models:
        status = f"cached at {info.path}" if info.cached else "not downloaded"
        print(f"{info.name:<{width}}  {info.size / 2**20:6.0f} MiB  {info.description}  [{status}]")
        if info.aliases:
            print(f"{'':<{width}}  aliases: {', '.join(info.aliases)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the model commands on their own: `python -m qwen_lsp.cli_model model list`."""
    parser = argparse.ArgumentParser(prog="qwen-lsp")
    add_model_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
