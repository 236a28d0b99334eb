"""Whether other processes keep this machine's CPUs busy: timings taken then say more about them than
about our kernels (a thread that shares its core stalls every parallel call), so they are not kept."""

from __future__ import annotations

import os
import time

# Share of all CPUs' time that other processes may take while kernels are measured.
BUSY_SHARE = 0.25
_RECHECK_SECONDS = 30.0
_last: tuple[float, bool] | None = None


def others_keep_cpus_busy(window: float = 0.2) -> bool:
    """True when, over `window` seconds, processes other than this one used more than `BUSY_SHARE` of
    the CPUs' time (Linux /proc; elsewhere False). Rechecked at most every 30 s."""
    global _last
    now = time.monotonic()
    if _last is not None and now - _last[0] < _RECHECK_SECONDS:
        return _last[1]
    try:
        busy_before, own_before = _busy_ticks(), _own_ticks()
        time.sleep(window)
        busy, own = _busy_ticks() - busy_before, _own_ticks() - own_before
    except (OSError, ValueError, IndexError):
        return False
    capacity = window * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
    result = (busy - own) / capacity > BUSY_SHARE
    _last = (now, result)
    return result


def _busy_ticks() -> int:
    """All CPUs' non-idle time so far (clock ticks), from the first line of /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return sum(fields[:8]) - idle - iowait


def _own_ticks() -> int:
    """This process's user + system time so far (clock ticks)."""
    with open("/proc/self/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
