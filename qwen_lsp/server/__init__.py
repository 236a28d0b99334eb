"""The qwen-lsp language server: thin pygls handlers over a plain core."""

from qwen_lsp.server.options import add_server_arguments, run_server

__all__ = ["add_server_arguments", "run_server"]
