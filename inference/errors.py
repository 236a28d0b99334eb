"""Errors the runtime raises for bad model files and unsupported models."""

from __future__ import annotations

import os


class ModelError(Exception):
    """Base class for every error about a model the runtime cannot use."""


class ModelFileError(ModelError):
    """A model file is missing, truncated, corrupt or of a kind we cannot read."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnsupportedModelError(ModelError):
    """The file is readable but holds an architecture, quant type or option we do not run."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ModelNotFoundError(ModelError):
    """No source (local path, hub, package registry) could provide the requested model."""
