"""What the CPU can do, detected at run time (never assumed)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class CpuFeatures:
    capability: str  # torch's dispatch level: "DEFAULT", "AVX2", "AVX512", ...
    flags: frozenset[str]  # /proc/cpuinfo flags (empty where unreadable)
    model_name: str

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags or self.capability.startswith(("AVX2", "AVX512"))

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags or self.capability.startswith("AVX512")

    @property
    def avx512_bf16(self) -> bool:
        return "avx512_bf16" in self.flags

    @property
    def amx(self) -> bool:
        return "amx_tile" in self.flags

    @property
    def native_bf16_matmul(self) -> bool:
        """bf16 dot products in hardware (AVX-512 BF16 or AMX) rather than emulated by conversion."""
        return self.avx512_bf16 or self.amx

    def key(self) -> str:
        """A short identity for caching measurements made on this CPU."""
        extras = [name for name, on in (("avx512", self.avx512), ("bf16", self.avx512_bf16), ("amx", self.amx)) if on]
        return "|".join([self.model_name, self.capability, *extras, torch.__version__])


def _cpuinfo_fields(text: str) -> tuple[frozenset[str], str]:
    flags: frozenset[str] = frozenset()
    model = "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = frozenset(value.split())
        elif key == "model name" and model == "unknown":
            model = value.strip()
    return flags, model


@functools.cache
def cpu_features() -> CpuFeatures:
    """Features of the CPU this process runs on."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags, model = _cpuinfo_fields(text)
    return CpuFeatures(torch.backends.cpu.get_cpu_capability(), flags, model)
