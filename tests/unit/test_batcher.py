"""Dynamic batcher: joins concurrent requests, keeps each request's rows in order, isolates errors per
batch, answers 429 when its queue is full, splits oversize requests."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from services.runtime.batcher import DynamicBatcher
from services.runtime.errors import Overloaded


def make(run, **kw):
    opts = dict(max_batch_size=8, max_queue_delay_ms=20, max_queue_size=64)
    opts.update(kw)
    return DynamicBatcher(run, **opts)


def test_concurrent_requests_share_one_call_and_keep_order():
    calls = []

    def run(feeds):
        calls.append(feeds["x"].shape[0])
        time.sleep(0.05)  # compute time: requests arriving meanwhile join the next batch
        return {"y": feeds["x"] * 2}
    b = make(run)
    results = {}

    def client(i):
        results[i] = b({"x": np.array([[i], [i + 100]], np.float32)})["y"]
    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(results[i], [[2 * i], [2 * (i + 100)]])
    assert sum(calls) == 8 and len(calls) < 4, calls  # joined into fewer calls than requests
    b.close()


def test_error_fails_only_its_batch():
    def run(feeds):
        if np.any(feeds["x"] < 0):
            raise ValueError("bad row")
        return {"y": feeds["x"]}
    b = make(run, max_queue_delay_ms=0)
    with pytest.raises(ValueError):
        b({"x": np.array([[-1.0]])})
    np.testing.assert_array_equal(b({"x": np.array([[3.0]])})["y"], [[3.0]])
    b.close()


def test_full_queue_answers_overloaded():
    gate = threading.Event()

    def run(feeds):
        gate.wait(5)
        return {"y": feeds["x"]}
    b = make(run, max_batch_size=4, max_queue_size=4, max_queue_delay_ms=0)
    # the first request finds the batcher idle and runs in its caller's thread, held there by the gate
    first = threading.Thread(target=b, args=({"x": np.zeros((4, 1))},))
    first.start()
    time.sleep(0.05)
    b.submit({"x": np.zeros((4, 1))})
    with pytest.raises(Overloaded) as err:
        b.submit({"x": np.zeros((1, 1))})
    assert err.value.status == 429
    gate.set()
    first.join(5)
    b.close()


def test_request_larger_than_batch_is_split_and_joined():
    sizes = []

    def run(feeds):
        sizes.append(len(feeds["x"]))
        return {"y": feeds["x"] + 1}
    b = make(run, max_batch_size=4)
    out = b({"x": np.arange(10, dtype=np.float32)[:, None]})["y"]
    np.testing.assert_array_equal(out[:, 0], np.arange(10) + 1)
    assert max(sizes) <= 4
    b.close()


def test_variable_length_inputs_are_padded():
    def run(feeds):
        return {"n": (feeds["tok"] != 0).sum(1, keepdims=True),
                "w": np.full((len(feeds["tok"]), 1), feeds["tok"].shape[1])}
    b = make(run, pad={"tok": (1, 0, "pre")}, max_queue_delay_ms=50)
    res = {}

    def client(k, n):
        res[k] = b({"tok": np.ones((1, n), np.int64)})
    ts = [threading.Thread(target=client, args=(k, n)) for k, n in [("a", 3), ("b", 7)]]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert res["a"]["n"][0, 0] == 3 and res["b"]["n"][0, 0] == 7
    b.close()


def test_timeout_waits_at_most_the_queue_delay():
    b = make(lambda f: {"y": f["x"]}, max_queue_delay_ms=30)
    t0 = time.perf_counter()
    b({"x": np.zeros((1, 1))})
    assert time.perf_counter() - t0 < 5.0  # a lone request is not held for a batch that never fills
    b.close()


def test_idle_batcher_runs_in_the_callers_thread():
    """No hand-off when nothing is queued or running: the call happens in the request's own thread."""
    seen = []

    def run(feeds):
        seen.append(threading.current_thread().name)
        return {"y": feeds["x"]}
    b = make(run)
    b({"x": np.zeros((1, 1))})
    assert seen == [threading.current_thread().name]
    b.close()


@pytest.mark.parametrize("in_flight", [1, 2])
def test_batches_in_flight(in_flight):
    """With two runners (the GPU default) a second batch runs while the first does; with one (the CPU's) never.
    Every request still gets its own rows back."""
    state = {"now": 0, "most": 0}
    lock = threading.Lock()

    def run(feeds):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)  # a device call: the GIL is free meanwhile
        with lock:
            state["now"] -= 1
        return {"y": feeds["x"] + 1}
    b = make(run, max_batch_size=2, max_queue_delay_ms=1, in_flight=in_flight)
    results = {}

    def client(i):
        results[i] = b({"x": np.array([[i]], np.float32)})["y"]
    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.close()
    assert {i: float(r[0, 0]) for i, r in results.items()} == {i: i + 1.0 for i in range(12)}
    assert state["most"] == in_flight


def test_in_flight_default_follows_the_device(monkeypatch):
    from services.runtime.config import batches_in_flight
    assert (batches_in_flight("cuda"), batches_in_flight("cpu")) == (2, 1)
    monkeypatch.setenv("BATCHES_IN_FLIGHT", "3")
    from services.settings import ServiceSettings
    ServiceSettings.load.cache_clear()
    assert batches_in_flight("cpu") == 3


def test_requests_of_other_shapes_are_never_joined_and_size_0_runs_each_alone():
    calls = []
    release = threading.Event()

    def run(feeds):
        calls.append(feeds["x"].shape)
        release.wait(5)
        return {"y": feeds["x"] + 1}
    for size, expected in ((8, [(1, 2), (2, 2), (1, 3)]), (0, [(1, 2), (1, 2), (1, 2), (1, 3)])):
        calls.clear()
        release.clear()
        b = make(run, max_batch_size=size)
        first = threading.Thread(target=b, args=({"x": np.zeros((1, 2), np.float32)},))
        first.start()  # runs inline and holds the runner: the next three queue up behind it
        while not calls:
            time.sleep(0.005)
        futures = [b.submit({"x": np.zeros((1, w), np.float32)}) for w in (2, 2, 3)]
        release.set()
        assert [f.result(5)["y"].shape for f in futures] == [(1, 2), (1, 2), (1, 3)]
        first.join()
        assert calls == expected, (size, calls)
        b.close()


def test_a_queued_request_past_its_deadline_leaves_without_running():
    from services.runtime import deadlines
    from services.runtime.errors import DeadlineExceeded
    seen, release = [], threading.Event()

    def run(feeds):
        seen.append(float(feeds["x"][0, 0]))
        release.wait(5)
        return {"y": feeds["x"]}
    b = make(run)
    first = threading.Thread(target=b, args=({"x": np.full((1, 1), 1, np.float32)},))
    first.start()
    while not seen:
        time.sleep(0.005)
    deadlines.begin(0.05, {})  # this thread's request may take 50 ms
    t0 = time.perf_counter()
    with pytest.raises(DeadlineExceeded) as err:
        b({"x": np.full((1, 1), 2, np.float32)})
    assert time.perf_counter() - t0 < 1 and err.value.status == 504 and err.value.field == "timeout"
    release.set()
    first.join()
    deadlines.begin(60, {})
    assert b({"x": np.full((1, 1), 3, np.float32)})["y"][0, 0] == 3
    assert seen == [1, 3] and b.queued_rows == 0  # the abandoned request never ran
    deadlines.begin(-1, {})
    with pytest.raises(DeadlineExceeded, match="before it reached the model"):
        b({"x": np.full((1, 1), 4, np.float32)})
    deadlines.current.set(None)  # this thread runs other tests next
    b.close()


def test_a_request_that_fails_a_shared_batch_fails_alone():
    """One request's bad values (a negative id here, an index past a table in a real graph) fail only that request:
    the batch it spoiled runs again request by request."""
    calls = []

    def run(feeds):
        calls.append(feeds["x"].shape[0])
        time.sleep(0.05)
        if (feeds["x"] < 0).any():
            raise ValueError("index out of bounds")
        return {"y": feeds["x"] * 2}
    b = make(run)
    results: dict = {}

    def client(i):
        try:
            results[i] = b({"x": np.array([[-1 if i == 2 else i]], np.float32)})["y"].tolist()
        except ValueError as exc:
            results[i] = str(exc)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: [[0]], 1: [[2]], 2: "index out of bounds", 3: [[6]]}
    assert max(calls) > 1, calls  # the requests did share a batch
