"""The local model cache: turning a model spec into a file on disk, downloading known models on demand.

Known models live at `<cache_dir()>/models/<name>/<file>.gguf`, next to `<file>.gguf.sha256`
(sha256sum format), written once the full checksum has been verified so later runs only
compare the size.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from filelock import FileLock

from inference.errors import ModelNotFoundError
from inference.model_registry import KNOWN_MODELS, KnownModel, ModelRegistry
from inference.model_sources import SOURCES, Fetch, SourceFailed, sha256_file


@dataclass(frozen=True)
class ModelInfo:
    """What `model list` shows about one known model."""

    name: str
    aliases: tuple[str, ...]
    description: str
    size: int
    cached: bool
    path: Path


def cache_dir() -> Path:
    """`$QWEN_LSP_CACHE` if set, else the user cache dir for qwen-lsp (honours XDG_CACHE_HOME)."""
    override = os.environ.get("QWEN_LSP_CACHE")
    if override:
        return Path(override).expanduser()
    return platformdirs.user_cache_path("qwen-lsp", appauthor=False)


def model_path(model: KnownModel) -> Path:
    """Where `model` lives in the cache, downloaded or not."""
    return cache_dir() / "models" / model.name / model.filename


def resolve_model(
    spec: str, *, fetch: bool = True, progress: bool = True, registry: ModelRegistry = KNOWN_MODELS
) -> Path:
    """The local file or directory for `spec`: a path to a .gguf file or HF model dir, or a known name.

    A known model missing from the cache is pulled when `fetch` is set.
    Raises ModelNotFoundError for missing paths, unknown names and failed downloads.
    """
    if _looks_like_path(spec):
        return _local_model(Path(spec).expanduser())
    model = registry.find(spec)
    if model is None:
        if Path(spec).exists():
            return _local_model(Path(spec))
        raise ModelNotFoundError(
            f"unknown model {spec!r}; known models: {_describe_names(registry)}; "
            "or give a path to a .gguf file or a Hugging Face model directory"
        )
    path = model_path(model)
    if _is_verified(model, path, progress):
        return path
    if not fetch:
        raise ModelNotFoundError(
            f"{model.name} is not downloaded (expected at {path}); run `qwen-lsp model pull {model.name}`"
        )
    return pull(model.name, progress=progress, registry=registry)


def pull(name: str, *, progress: bool = True, registry: ModelRegistry = KNOWN_MODELS) -> Path:
    """Make sure the known model `name` is in the cache and return its path.

    Tries each source in `model_sources.SOURCES` in turn; a download is kept only if its size and
    sha256 match. A lock file serialises concurrent pulls of the same model across processes.
    Raises ModelNotFoundError naming every source tried and why it failed.
    """
    model = registry.find(name)
    if model is None:
        raise ModelNotFoundError(f"unknown model {name!r}; known models: {_describe_names(registry)}")
    target = model_path(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.with_name(target.name + ".lock")):
        if _is_verified(model, target, progress):
            return target
        failures = []
        for source_name, fetch in SOURCES:
            try:
                _install(model, target, fetch, progress)
                return target
            except SourceFailed as err:
                failures.append(f"{source_name}: {err}")
    tried = "".join(f"\n  - {failure}" for failure in failures)
    raise ModelNotFoundError(f"could not download {model.name}; sources tried:{tried}")


def list_models(registry: ModelRegistry = KNOWN_MODELS) -> list[ModelInfo]:
    """Every known model with its size and whether (and where) it is cached."""
    infos = []
    for model in registry.models:
        path = model_path(model)
        infos.append(
            ModelInfo(
                name=model.name,
                aliases=model.aliases,
                description=model.description,
                size=model.size,
                cached=path.is_file() and path.stat().st_size == model.size,
                path=path,
            )
        )
    return infos


def _install(model: KnownModel, target: Path, fetch: Fetch, progress: bool) -> None:
    """Fetch into a temp file beside `target`, check it, rename it into place, then record its sha256."""
    temp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        digest = fetch(model, temp, progress)
        size = temp.stat().st_size
        if size != model.size:
            raise SourceFailed(f"size mismatch for {model.filename}: expected {model.size} bytes, got {size}")
        if digest != model.sha256:
            raise SourceFailed(f"sha256 mismatch for {model.filename}: expected {model.sha256}, got {digest}")
        os.replace(temp, target)
        _write_checksum(target, digest)
    finally:
        temp.unlink(missing_ok=True)


def _is_verified(model: KnownModel, path: Path, progress: bool) -> bool:
    """True if `path` holds `model`: size must match, and the sha256 once (then remembered)."""
    if not path.is_file() or path.stat().st_size != model.size:
        return False
    if _read_checksum(path) == model.sha256:
        return True
    digest = sha256_file(path, progress=progress, desc=f"verifying {path.name}")
    if digest != model.sha256:
        return False
    _write_checksum(path, digest)
    return True


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_checksum(path: Path) -> str | None:
    try:
        return _checksum_path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None


def _write_checksum(path: Path, digest: str) -> None:
    _checksum_path(path).write_text(f"{digest}  {path.name}\n")


def _looks_like_path(spec: str) -> bool:
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return any(sep in spec for sep in separators) or spec.startswith(("~", ".")) or spec.endswith(".gguf")


def _local_model(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        raise ModelNotFoundError(f"{path} is a directory without config.json, so not a Hugging Face model")
    raise ModelNotFoundError(f"model path does not exist: {path}")


def _describe_names(registry: ModelRegistry) -> str:
    return ", ".join(
        f"{model.name} (also: {', '.join(model.aliases)})" if model.aliases else model.name for model in registry.models
    )
