"""Choosing a kernel per (quant type, shape) on this CPU by a one-time micro-measurement.

The first weight of each (type, shape) is built with every applicable candidate; each is timed on
a one-token call (decode) and a batch (prefill), and the one with the lowest cost for a typical
completion (`PROMPT_TOKENS` prefilled, `DECODED_TOKENS` decoded) wins; the output head computes one
row per prompt (its last), so only its one-token calls count, and a Q8_0/Q6_K head is split into
coarse and residual codes without measuring (`split_head`: greedy steps read about half of it). A
one-token call timed alone finds its weight in the last-level cache (hundreds of MB on a server CPU),
where decoding streams every layer from memory: it is charged at least its weight's bytes over the
measured memory bandwidth. A kernel holding a larger copy of the weight than the file's (up to 3.5x
its bytes for a bf16 copy of Q4_K) must beat the others by `COPY_MARGIN`: prefill timings on a loaded
machine vary by more than the kernels differ there, and memory should not follow that noise. Choices
are cached per CPU, torch version and native kernel source in `<cache_dir>/kernel-choices.json`, so
later loads skip the measurement (and a changed kernel is measured anew). So is the native kernels' crossover
from their int8 path to dequantized tiles + BLAS (`few_token_limit`).
Nothing is measured while other processes keep the CPUs busy (`cpu_load`): a thread sharing its
core stalls every parallel call, and such timings once made the 1.5B keep bf16 copies of its FFN.

Only candidates that reproduce the file's values compete unless `QWEN_LSP_LOSSY_KERNELS=1` (per-row
int8 re-rounding measured 84% greedy agreement on real code: too lossy by default);
`QWEN_LSP_KERNEL=<name>` forces one candidate where it applies. A file-mapped weight's pages are
released once its kernel holds its own copy (not when the kernel reads the file's blocks in place).
"""

from __future__ import annotations

import json
import os
import threading
import time

import torch

from ..checkpoint import CheckpointTensor
from ..linear import LinearKernel
from .candidates import CANDIDATES, Candidate
from .bandwidth import read_bandwidth_gbs
from .cpu_features import cpu_features
from .cpu_load import others_keep_cpus_busy
from .page_release import release_file_pages
from .split_head import split_head

# A prompt is prefilled in chunks of BATCH tokens (GenerationConfig.prefill_chunk's default).
PROMPT_TOKENS, DECODED_TOKENS, BATCH = 1500, 128, 512
COPY_MARGIN = 1.15
# Rows per call tried for the native int8 path's limit, and the weight it is measured on.
FEW_TOKEN_STEPS = (8, 12, 16, 24, 32)
_FEW_TOKENS_KEY, _FEW_TOKENS_SHAPE = "native-ggml:few-tokens", (2048, 1024)
_BANDWIDTH_KEY = "memory-read-GB/s"
_REPEATS = 3
# Weights used as the output head (the embedding table where the two are tied).
OUTPUT_HEADS = ("output.weight", "token_embd.weight")
_lock = threading.RLock()  # kernels built under it may ask for `few_token_limit`
_choices: dict[str, str] | None = None


def allowed_candidates() -> list[Candidate]:
    forced = os.environ.get("QWEN_LSP_KERNEL")
    exact_only = os.environ.get("QWEN_LSP_LOSSY_KERNELS") != "1"
    return [c for c in CANDIDATES if (not forced or c.name == forced) and (c.exact or not exact_only)]


def measured_cost(kernel: LinearKernel, give_up_after: float = float("inf"), prefills: bool = True) -> float:
    """Seconds for a typical completion's calls through `kernel` (fastest of a few runs: least disturbed by load);
    without `prefills`, one-token calls only."""
    one = torch.randn(1, kernel.in_features)
    batch = torch.randn(BATCH, kernel.in_features)
    kernel(one)
    first = time.perf_counter()
    kernel(one)
    if (time.perf_counter() - first) * DECODED_TOKENS > give_up_after:
        return float("inf")
    decode = max(_fastest_seconds(lambda: kernel(one)), kernel.nbytes / (memory_bandwidth_gbs() * 1e9))
    if not prefills:
        return decode * (DECODED_TOKENS + 1)
    prefill = _fastest_seconds(lambda: kernel(batch))
    return decode * DECODED_TOKENS + prefill * PROMPT_TOKENS / BATCH


def _fastest_seconds(call) -> float:
    times = []
    for _ in range(_REPEATS):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def memory_bandwidth_gbs() -> float:
    """This machine's read bandwidth on torch's threads, measured once and cached with the choices."""
    with _lock:
        choices = _load_choices()
        try:
            return float(choices[_BANDWIDTH_KEY])
        except (KeyError, ValueError):
            pass
        bandwidth = read_bandwidth_gbs(torch.get_num_threads(), megabytes=256)
        choices[_BANDWIDTH_KEY] = f"{bandwidth:.2f}"
        _save_choices(choices)
        return bandwidth


def few_token_limit(ops, bf16_tiles: bool = False) -> int:
    """Most rows per call for which the native kernels' int8 path beats dequantized tiles (bf16 or
    fp32) + BLAS on this CPU (speculative verification passes, up to 17 rows, want the faster one):
    the largest of `FEW_TOKEN_STEPS` up to which it is faster on a random Q8_0 weight, measured once
    and cached."""
    key = _FEW_TOKENS_KEY + (":bf16" if bf16_tiles else "")
    with _lock:
        choices = _load_choices()
        known = choices.get(key, "")
        if known.isdigit():
            return int(known)
        if others_keep_cpus_busy():
            from .native_ggml import FEW_TOKENS

            return FEW_TOKENS  # not measured (see _unmeasured_choice)
        limit = _measure_few_token_limit(ops, bf16_tiles)
        choices[key] = str(limit)
        _save_choices(choices)
        return limit


def _measure_few_token_limit(ops, bf16_tiles: bool) -> int:
    from gguf import GGMLQuantizationType, quants

    from .native_ggml import NativeBlockLinear

    out_features, in_features = _FEW_TOKENS_SHAPE
    values = torch.randn(out_features, in_features, generator=torch.Generator().manual_seed(0)) * 0.05
    raw = torch.from_numpy(quants.quantize(values.numpy(), GGMLQuantizationType.Q8_0))
    kernel = NativeBlockLinear(ops, raw, GGMLQuantizationType.Q8_0, out_features, in_features, bf16_tiles=bf16_tiles)
    limit = FEW_TOKEN_STEPS[0]
    for tokens in FEW_TOKEN_STEPS:
        rows = torch.randn(tokens, in_features)
        kernel.int8_matmul(rows), kernel.tiled_matmul(rows)  # warm both paths
        if _fastest_seconds(lambda: kernel.int8_matmul(rows)) > _fastest_seconds(lambda: kernel.tiled_matmul(rows)):
            break
        limit = tokens
    return limit


def choose_kernel(tensor: CheckpointTensor) -> LinearKernel | None:
    """The fastest applicable kernel for a quantized weight (measured once per type/shape/CPU)."""
    kernel = _output_head(tensor) or _choose(tensor)
    if kernel is not None and tensor.file_mapped and not kernel.reads_checkpoint_in_place:
        release_file_pages(tensor.data)
    return kernel


def _output_head(tensor: CheckpointTensor) -> LinearKernel | None:
    """An output head's greedy steps read only its coarse codes (`split_head`) where that applies, by
    construction fewer bytes than any candidate reads (`QWEN_LSP_KERNEL` naming another kernel skips it)."""
    if tensor.name not in OUTPUT_HEADS or os.environ.get("QWEN_LSP_KERNEL", "split-head") != "split-head":
        return None
    return split_head(tensor)


def _choose(tensor: CheckpointTensor) -> LinearKernel | None:
    candidates = allowed_candidates()
    head = tensor.name in OUTPUT_HEADS
    key = ("head:" if head else "") + f"{tensor.qtype.name}:{tensor.shape[0]}x{tensor.shape[1]}:"
    key += ",".join(c.name for c in candidates)
    with _lock:
        choices = _load_choices()
        known = next((c for c in candidates if c.name == choices.get(key)), None)
        if known is not None:
            kernel = known.build(tensor)
            if kernel is not None:
                return kernel
        if others_keep_cpus_busy():
            return _unmeasured_choice(candidates, tensor)
        best, best_cost = None, float("inf")
        for candidate in candidates:
            kernel = candidate.build(tensor)
            if kernel is None:
                continue
            cost = measured_cost(kernel, give_up_after=4 * best_cost, prefills=not head)
            if kernel.nbytes > tensor.data.numel() * tensor.data.element_size():
                cost *= COPY_MARGIN
            if cost < best_cost:
                best, best_cost = (candidate, kernel), cost
        if best is None:
            return None
        choices[key] = best[0].name
        _save_choices(choices)
        return best[1]


def _unmeasured_choice(candidates: list[Candidate], tensor: CheckpointTensor) -> LinearKernel | None:
    """While other processes keep the CPUs busy: the first candidate that applies (the native kernels,
    which read the file's blocks in place, come first), for this process only; a later, quiet load
    measures."""
    for candidate in candidates:
        kernel = candidate.build(tensor)
        if kernel is not None:
            return kernel
    return None


def _measurement_key() -> str:
    """What the measurements depend on: the CPU, torch, the native kernels' source and the batch."""
    from .native_build import source_digest

    return f"{cpu_features().key()}|native {source_digest()[:12]}|batch {BATCH}"


def _choices_file():
    from ..model_store import cache_dir

    return cache_dir() / "kernel-choices.json"


def _load_choices() -> dict[str, str]:
    global _choices
    if _choices is None:
        try:
            _choices = json.loads(_choices_file().read_text()).get(_measurement_key(), {})
        except (OSError, ValueError):
            _choices = {}
    return _choices


def _save_choices(choices: dict[str, str]) -> None:
    path = _choices_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            everything = json.loads(path.read_text())
        except (OSError, ValueError):
            everything = {}
        everything[_measurement_key()] = choices
        scratch = path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps(everything, indent=1))
        scratch.replace(path)
    except OSError:
        pass  # a read-only cache only costs a re-measurement next time
