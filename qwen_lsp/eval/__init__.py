"""Evaluation: FIM case generation, metrics and the runner behind ``qwen-lsp eval``."""
