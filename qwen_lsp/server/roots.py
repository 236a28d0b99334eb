"""Workspace roots, and the rule that the server reads nothing outside them.

Paths are resolved (symlinks included) before the check, so a link inside a root that points
outside it is refused like the outside path itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from pygls.uris import from_fs_path, to_fs_path

MAX_READ_BYTES = 4 * 1024 * 1024


class WorkspaceRoots:
    """The set of workspace folders (multi-root)."""

    def __init__(self) -> None:
        self._roots: dict[str, Path] = {}

    def add(self, uri: str) -> None:
        path = to_fs_path(uri) if uri.startswith("file:") else None
        if path:
            self._roots[uri] = Path(os.path.realpath(path))

    def remove(self, uri: str) -> Path | None:
        return self._roots.pop(uri, None)

    @property
    def paths(self) -> list[Path]:
        return list(self._roots.values())

    def root_of(self, path: str | os.PathLike) -> Path | None:
        """The root containing ``path`` after resolving symlinks, or None."""
        real = Path(os.path.realpath(path))
        for root in sorted(self._roots.values(), key=lambda p: len(p.parts), reverse=True):
            if real == root or root in real.parents:
                return root
        return None

    def path_of(self, uri: str) -> str | None:
        """Filesystem path of a ``file:`` URI inside a root, else None."""
        if not uri.startswith("file:"):
            return None
        path = to_fs_path(uri)
        return path if path and self.root_of(path) is not None else None

    def read_text(self, path: str) -> str | None:
        """Contents of a UTF-8 file inside a root; None if missing, outside, binary or too big."""
        if self.root_of(path) is None:
            return None
        try:
            real = os.path.realpath(path)
            if not os.path.isfile(real) or os.path.getsize(real) > MAX_READ_BYTES:
                return None
            with open(real, "rb") as f:
                return f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None


def uri_of(path: str) -> str:
    return from_fs_path(path) or f"file://{path}"
