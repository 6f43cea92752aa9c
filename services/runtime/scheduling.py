"""Linux scheduling policy and name of a service's threads (why each service runs which: services/__main__.py).

A gunicorn worker takes ``WORKER_SCHED_POLICY`` in ``post_fork``, and every thread it starts inherits it.
The threads that keep a CPU busy stepping models or writing streams (a decoding scheduler, a batcher, the SSE
flusher) take ``COMPUTE_SCHED_POLICY`` as well when they start, so a service can run those as SCHED_BATCH
while its request threads keep the default policy and are woken at once. Lowering a thread to SCHED_BATCH, or
bringing it back to SCHED_OTHER at the same nice value, needs no privilege.
"""
from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger("scheduling")
POLICIES = {"batch": getattr(os, "SCHED_BATCH", None), "other": getattr(os, "SCHED_OTHER", None)}
_PR_SET_NAME = 15


def apply(policy: str | None, what: str = "this thread", logger: logging.Logger | None = None) -> bool:
    """Give the calling thread ``policy`` (``batch`` or ``other``; empty or None leaves it as it is) -> whether
    it was applied. A sandbox that forbids it, or a system without these policies, serves on as it is, with a
    warning on ``logger`` (gunicorn's own log in ``post_fork``, where the service's logging is not set up yet)."""
    policy = (policy or "").strip().lower()
    if not policy:
        return False
    if policy not in POLICIES:
        (logger or log).warning("scheduling policy %r for %s unknown (batch or other); left as it is", policy, what)
        return False
    if POLICIES[policy] is None or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, POLICIES[policy], os.sched_param(0))  # 0: the calling thread, on Linux
    except OSError as exc:
        (logger or log).warning("scheduling policy %s for %s not applied: %s", policy, what, exc)
        return False
    return True


def compute_thread(name: str) -> None:
    """At the start of a thread that keeps a CPU busy: its OS-visible name (``top -H``, ``ps -L``, py-spy:
    Linux keeps 15 bytes) and ``COMPUTE_SCHED_POLICY``."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
        except (OSError, AttributeError):
            pass
    apply(os.environ.get("COMPUTE_SCHED_POLICY"), name)
