"""Giving memory back: a file-mapped weight's pages once a repacked copy replaces it (one resident
copy), and the heap that loading freed but the C allocator kept."""

from __future__ import annotations

import ctypes
import mmap
import sys

import torch

_MADV_DONTNEED = 4


def release_file_pages(data: torch.Tensor) -> None:
    """Unmap the whole pages under `data`, which must view a private, never-written file mapping.

    The file's pages leave this process's resident set; touching them again re-reads the file, so
    neighbouring tensors that share an edge page stay correct. A no-op off Linux.
    """
    if not sys.platform.startswith("linux") or data.numel() == 0:
        return
    page = mmap.PAGESIZE
    begin = data.data_ptr()
    start = -(-begin // page) * page
    stop = (begin + data.numel() * data.element_size()) // page * page
    if stop > start:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start), _MADV_DONTNEED)


def release_free_heap() -> None:
    """Return the C heap's free pages to the OS (glibc's malloc_trim; a no-op elsewhere).

    Loading a model frees far more than it keeps (the GGUF metadata's Python lists, the tokenizer's
    build-time vocabulary); glibc keeps such pages mapped, ~80 MB resident for the 0.5B model.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:  # another C library (musl)
        return
    trim(ctypes.c_size_t(0))
