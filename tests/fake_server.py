"""Runs the real server process with ``inference.load_model`` replaced by the scripted fake."""

import inference

import fake_runtime

inference.load_model = fake_runtime.load_model

from qwen_lsp.server.__main__ import main  # noqa: E402

main()
