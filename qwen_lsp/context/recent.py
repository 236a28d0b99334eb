"""Recently edited and recently viewed regions, most recent first."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

REGION_RADIUS = 8  # lines each side of the touched line
MAX_REGIONS = 32


@dataclass(frozen=True)
class Region:
    """Lines [start_line, end_line) of a file, touched at ``when`` (monotonic seconds)."""

    path: str
    start_line: int
    end_line: int
    edited: bool
    when: float


class RecentRegions:
    """Remembers where the user edited or looked, merging nearby touches of the same file."""

    def __init__(self, max_regions: int = MAX_REGIONS, radius: int = REGION_RADIUS) -> None:
        self._regions: OrderedDict[tuple[str, int], Region] = OrderedDict()
        self._lock = threading.Lock()
        self.max_regions = max_regions
        self.radius = radius

    def touch(self, path: str, line: int, edited: bool) -> None:
        """Record an edit (or a view, e.g. the cursor resting) at a line of a file."""
        bucket = max(0, line) // self.radius
        key = (path, bucket)
        with self._lock:
            old = self._regions.pop(key, None)
            self._regions[key] = Region(
                path, max(0, bucket * self.radius - self.radius),
                bucket * self.radius + 2 * self.radius,
                edited or (old is not None and old.edited), time.monotonic())
            while len(self._regions) > self.max_regions:
                self._regions.popitem(last=False)

    def forget_file(self, path: str) -> None:
        with self._lock:
            for key in [key for key in self._regions if key[0] == path]:
                del self._regions[key]

    def regions(self, exclude_path: str | None = None) -> list[Region]:
        """Regions of other files, most recent first, edits before views of equal age."""
        with self._lock:
            found = [r for r in reversed(self._regions.values()) if r.path != exclude_path]
        return sorted(found, key=lambda r: (-r.when, not r.edited))
