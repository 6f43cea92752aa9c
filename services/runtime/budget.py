"""The memory budget of a service whose models load on demand (the ``models`` service of imported models): a
ledger of the bytes each loaded version holds, and which versions go first when a load needs room.

A version is charged the resident memory its load added (loads run one at a time, so the growth is its own,
but for what requests to other models allocate meanwhile), never less than its files, nor more than the room
made for it (``estimate``), which its next load then makes bigger. A retired
version stays charged until its in-flight requests finish and it closes, so the bytes in use never pass the
budget. The repository holds the lock: every method here runs under it."""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from services.runtime import metrics

# the default budget: this share of the container's memory limit (its cgroup's), else of the machine's RAM
DEFAULT_SHARE = 0.6

Key = tuple[str, int]  # (model, version)


def default_budget() -> int:
    """A pod's budget: ``DEFAULT_SHARE`` of its memory limit (each worker keeps to its part)."""
    return int(memory_limit() * DEFAULT_SHARE)


def memory_limit() -> int:
    """The cgroup's memory limit (v2, then v1) when it has one, else the machine's RAM."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:  # v2 says "max" when unlimited, v1 a huge number
            return int(raw)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resident_bytes() -> int:
    """This process's resident memory (/proc/self/statm), 0 where there is none to read."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def files_bytes(version_dir: Path) -> int:
    return sum(f.stat().st_size for f in Path(version_dir).iterdir() if f.is_file())


class MemoryBudget:
    def __init__(self, limit: int):
        self.limit = limit
        self.charged: dict[Key, int] = {}  # loaded, loading or closing -> bytes
        self.closing: set[Key] = set()     # retired, closing once their requests finish
        self.sizes: dict[Key, int] = {}    # measured at the last load: the next load's estimate
        self.last_used: dict[Key, float] = {}
        metrics.BUDGET_BYTES.set(limit)

    @property
    def in_use(self) -> int:
        return sum(self.charged.values())

    def estimate(self, key: Key, version_dir: Path) -> int:
        """Room to make before a load: a quarter more than its files (a session maps its weights, and adds about
        a tenth; FINDINGS) or than it measured last, whichever is more: a load's growth varies."""
        return int(1.25 * max(files_bytes(version_dir), self.sizes.get(key, 0)))

    @property
    def closing_bytes(self) -> int:
        """What the versions closing now will give back."""
        return sum(self.charged.get(k, 0) for k in self.closing)

    def fits(self, more: int) -> bool:
        return self.in_use + more <= self.limit

    def victims(self, loaded: list[Key], newest: dict[str, int], pinned: set[str]) -> list[Key]:
        """The loaded versions a load may retire, first to go first: older versions, then the least recently
        used; never a pinned model's, nor one already closing."""
        free = [k for k in loaded if k[0] not in pinned and k not in self.closing and k in self.charged]
        return sorted(free, key=lambda k: (k[1] == newest.get(k[0]), self.last_used.get(k, 0.0)))

    def charge(self, key: Key, size: int) -> None:
        self.charged[key] = size
        self.last_used[key] = time.monotonic()
        self._publish(key)

    def measured(self, key: Key, grown: int, estimate: int, version_dir: Path) -> None:
        """A load done: it grew the process by ``grown``. It is charged that (at least its files), up to the room
        made for it, so the budget is never passed; the next load of it makes room for what it measured."""
        size = max(grown, files_bytes(version_dir))
        self.sizes[key] = size
        self.charge(key, min(size, estimate))

    def release(self, key: Key) -> None:
        """``key`` closed (or its load failed): its bytes come back."""
        self.charged.pop(key, None)
        self.closing.discard(key)
        self.last_used.pop(key, None)
        with contextlib.suppress(KeyError):  # never charged with a measured size
            metrics.MODEL_BYTES.remove(*map(str, key))
        self._publish(None)

    def touch(self, key: Key) -> None:
        self.last_used[key] = time.monotonic()

    def _publish(self, key: Key | None) -> None:
        metrics.BUDGET_IN_USE.set(self.in_use)
        if key is not None:
            metrics.MODEL_BYTES.labels(*map(str, key)).set(self.charged[key])
