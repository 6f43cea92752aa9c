"""What the runtime derives from its settings (services/settings.py): workers, devices, batching, limits."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from services.settings import REPO_ROOT, ProcessSettings, ServiceSettings

__all__ = ["REPO_ROOT", "LIMITS", "usable_cpus", "web_workers", "model_device",
           "batching_override", "settings", "use"]


_GIVEN: list[ServiceSettings] = []  # the settings an app was made with, when given (``use``)


def settings() -> ServiceSettings:
    """The process's service settings: those ``create_app(settings=...)`` was given, else the environment's."""
    return _GIVEN[-1] if _GIVEN else ServiceSettings.load()


def use(given: ServiceSettings | None) -> None:
    """Serve with ``given`` instead of the environment's settings (None: the environment's again). One process
    serves one service, so they hold for the whole process: its limits, batching, devices and sessions."""
    _GIVEN[:] = [given] if given is not None else []


def usable_cpus() -> int:
    """CPUs this process may run on: the affinity mask, or the cgroup (container) CPU quota when lower."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def web_workers(process: ProcessSettings | None = None) -> int:
    """gunicorn workers: WEB_CONCURRENCY, else one per usable CPU (at most 4), on a GPU as well.

    Request parsing and JSON are Python and hold the GIL, so one process tops out near one core; each
    worker has its own batcher and ONNX Runtime session, so batches stay full enough at 2-4 workers, and a
    killed worker does not take the service down while its replacement loads."""
    workers = (process or ProcessSettings.from_env()).workers
    return workers if workers else min(4, usable_cpus())


def model_device() -> str:
    return settings().model_device


def batching_override(manifest_batching: dict) -> dict:
    """Manifest batching settings, overridden by MAX_BATCH_SIZE / MAX_QUEUE_DELAY_MS / MAX_QUEUE_SIZE."""
    s = settings()
    out = dict(manifest_batching)
    if s.max_batch_size is not None:
        out["max_batch_size"] = s.max_batch_size
    if s.max_queue_delay_ms is not None:
        out["max_queue_delay_ms"] = s.max_queue_delay_ms
    out["max_queue_size"] = s.max_queue_size or int(out.get("max_queue_size", 1024))
    return out


def batches_in_flight(device: str) -> int:
    """BATCHES_IN_FLIGHT, else by device: on CUDA a second batch forms and starts while one runs (the call
    releases the GIL); on a CPU the session's threads already fill the cores, so one."""
    chosen = settings().batches_in_flight
    return chosen if chosen is not None else (2 if device == "cuda" else 1)


class _Limits(Mapping):
    """Limits on everything a client can make the server compute, read from the settings when first used."""

    def __getitem__(self, key: str) -> int:
        return settings().limits[key]

    def __iter__(self):
        return iter(settings().limits)

    def __len__(self) -> int:
        return len(settings().limits)


LIMITS: Mapping[str, int] = _Limits()
