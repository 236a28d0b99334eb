"""Compiling the native kernels (native/*.cpp: GGML-block matmuls, few-token attention, row ops)
with the system C++ compiler into one library.

Built once per (source, torch version, CPU, compiler) into `<cache_dir>/native/` with
``-march=native`` (the instruction sets this CPU has, nothing assumed), under a file lock so
concurrent processes build it once, then loaded as the `torch.ops.qwen_ggml` ops. `$CXX` names the
compiler (default ``c++``), `$CXXFLAGS` adds flags. Without a working compiler one warning is
logged and the other kernels are used.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
from pathlib import Path

import torch
from filelock import FileLock

from .cpu_features import cpu_features

log = logging.getLogger(__name__)

NATIVE_DIR = Path(__file__).with_name("native")
SOURCES = sorted(NATIVE_DIR.glob("*.cpp"))
_BUILD_TIMEOUT_S = 600


class NativeBuildError(RuntimeError):
    """The native kernels could not be compiled."""


def compiler() -> str:
    return os.environ.get("CXX") or "c++"


def compile_command(output: Path) -> list[str]:
    torch_dir = Path(torch.__file__).parent
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        compiler(), "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++20", "-w",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-isystem", str(torch_dir / "include"), *map(str, SOURCES),
        "-L", str(torch_dir / "lib"), "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_dir / 'lib'}", "-o", str(output),
        *os.environ.get("CXXFLAGS", "").split(),
    ]


@functools.cache
def source_digest() -> str:
    """The kernels' sources, hashed: what is built from them, or measured on them, is keyed by this."""
    digest = hashlib.sha256()
    for source in sorted(NATIVE_DIR.glob("*.[ch]*")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def library_path(directory: Path) -> Path:
    """Where the library built from this source for this torch, CPU and compiler lives."""
    identity = hashlib.sha256(source_digest().encode())
    identity.update("|".join([torch.__version__, cpu_features().key(), *compile_command(Path())]).encode())
    return directory / f"ggml_matmul-{identity.hexdigest()[:16]}.so"


def build_library(directory: Path) -> Path:
    """The compiled library in `directory`, compiling it unless already there; NativeBuildError on failure."""
    target = library_path(directory)
    if target.is_file():
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if target.is_file():
                return target
            scratch = target.with_suffix(f".{os.getpid()}.tmp")
            done = subprocess.run(compile_command(scratch), capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S)
            if done.returncode != 0:
                scratch.unlink(missing_ok=True)
                raise NativeBuildError(f"{compiler()} exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
            scratch.replace(target)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeBuildError(f"{compiler()}: {exc}") from exc
    return target


def load_native_ops(directory: Path | None = None):
    """`torch.ops.qwen_ggml` built (or reused) in `directory` (default `<cache_dir>/native`); None if it cannot be built."""
    if hasattr(torch.ops.qwen_ggml, "quantized_matmul"):
        return torch.ops.qwen_ggml
    if directory is None:
        from ..model_store import cache_dir

        directory = cache_dir() / "native"
    try:
        torch.ops.load_library(str(build_library(directory)))
    except (NativeBuildError, OSError, RuntimeError) as exc:
        log.warning("native GGML kernels unavailable, using the slower built-in kernels (%s)", exc)
        return None
    return torch.ops.qwen_ggml


@functools.cache
def native_ops():
    """The native ops for this process (built on first use), or None."""
    return load_native_ops()
