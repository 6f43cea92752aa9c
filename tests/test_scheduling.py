"""services/runtime/scheduling.py: a busy thread takes COMPUTE_SCHED_POLICY and its OS name, and nothing else
changes policy with it."""
import os
import sys
import threading
from pathlib import Path

import pytest

from services.runtime import scheduling

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux scheduling policies")


def test_a_compute_thread_takes_its_policy_and_name_and_the_thread_that_started_it_does_not(monkeypatch):
    monkeypatch.setenv("COMPUTE_SCHED_POLICY", "batch")
    seen = {}

    def busy():
        scheduling.compute_thread("decoder-scheduler")
        seen["policy"] = os.sched_getscheduler(0)  # 0: this thread
        seen["name"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    before = os.sched_getscheduler(0)
    t = threading.Thread(target=busy)
    t.start()
    t.join()
    assert seen == {"policy": os.SCHED_BATCH, "name": "decoder-schedul"}  # Linux keeps 15 bytes of a name
    assert os.sched_getscheduler(0) == before


def test_an_unknown_or_empty_policy_leaves_the_thread_as_it_is(caplog):
    before = os.sched_getscheduler(0)
    assert scheduling.apply("fifo", "worker 1") is False
    assert "'fifo' for worker 1 unknown" in caplog.text
    assert scheduling.apply("") is False and scheduling.apply(None) is False
    assert os.sched_getscheduler(0) == before
