"""``python -m qwen_lsp.server``: run the language server (stdio unless ``--tcp``)."""

import argparse

from qwen_lsp.server.options import add_server_arguments, run_server


def main() -> None:
    parser = argparse.ArgumentParser(prog="qwen-lsp-server", description=__doc__)
    add_server_arguments(parser)
    run_server(parser.parse_args())


if __name__ == "__main__":
    main()
