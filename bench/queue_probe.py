"""``python -m bench.queue_probe``: one batcher per worker process against one queue shared by the workers, with
HTTP left out: does a shared queue's fuller batches pay for handing each request to another process?

- ``per_worker``: as the services run today, 2 processes, each 16 threads and its own batcher and session.
- ``shared``: 2 client processes of 16 threads each hand their tensors (one MNIST digit, 3 KB) over a Unix
  socket (``multiprocessing.connection``) to one model process, whose single batcher and session run them.

Each thread sends one request at a time for ``--seconds``; printed: requests/s and rows per batch, per round.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import threading
import time
from multiprocessing.connection import Client, Listener

import numpy as np

THREADS = 16


def _session_and_batcher():
    from bench.run import latest
    from services.runtime.batcher import DynamicBatcher
    from services.runtime.sessions import create_session
    sess = create_session(latest("mnist") / "model.onnx")
    outputs = [o.name for o in sess.get_outputs()]
    calls = {"batches": 0, "rows": 0}

    def run(feeds):
        calls["batches"] += 1
        calls["rows"] += next(iter(feeds.values())).shape[0]
        return dict(zip(outputs, sess.run(outputs, feeds), strict=True))
    return DynamicBatcher(run, max_batch_size=64, max_queue_delay_ms=2), calls, sess.get_inputs()[0].name


def _digit():
    from training.data import load_mnist_5k
    return (load_mnist_5k()["test"][0][:1, ..., None] / 255.0).astype(np.float32)


def _threads(work, seconds: float) -> int:
    done, stop = [0] * THREADS, time.monotonic() + seconds

    def loop(i):
        while time.monotonic() < stop:
            work()
            done[i] += 1
    ts = [threading.Thread(target=loop, args=(i,)) for i in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done)


def _worker(seconds: float, out) -> None:
    batcher, calls, name = _session_and_batcher()
    x = _digit()
    batcher({name: x})  # warm up
    calls.update(batches=0, rows=0)
    n = _threads(lambda: batcher({name: x}), seconds)
    out.put((n, calls["batches"], calls["rows"]))
    batcher.close()


def _model_process(address: str, ready, out) -> None:
    batcher, calls, name = _session_and_batcher()
    batcher({name: _digit()})
    calls.update(batches=0, rows=0)
    listener = Listener(address, family="AF_UNIX")
    ready.set()

    def serve(conn):
        try:
            while True:
                x = conn.recv_bytes()
                if not x:
                    break
                result = batcher({name: np.frombuffer(x, np.float32).reshape(1, 28, 28, 1)})
                conn.send_bytes(next(iter(result.values())).tobytes())
        except EOFError:
            pass
    threads = []
    for _ in range(2 * THREADS):
        t = threading.Thread(target=serve, args=(listener.accept(),), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    out.put((calls["batches"], calls["rows"]))
    batcher.close()


def _client(address: str, seconds: float, out) -> None:
    x = _digit().tobytes()
    conns = [Client(address, family="AF_UNIX") for _ in range(THREADS)]
    local = threading.local()
    order = iter(conns)
    lock = threading.Lock()

    def one():
        if not hasattr(local, "conn"):
            with lock:
                local.conn = next(order)
        local.conn.send_bytes(x)
        local.conn.recv_bytes()
    n = _threads(one, seconds)
    for c in conns:
        c.send_bytes(b"")
        c.close()
    out.put(n)


def per_worker(seconds: float) -> dict:
    out = mp.Queue()
    ps = [mp.Process(target=_worker, args=(seconds, out)) for _ in range(2)]
    for p in ps:
        p.start()
    got = [out.get() for _ in ps]
    for p in ps:
        p.join()
    n, batches, rows = (sum(g[i] for g in got) for i in range(3))
    return {"rps": n / seconds, "rows_per_batch": rows / max(1, batches)}


def shared(seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        address = os.path.join(tmp, "model.sock")
        ready, out, done = mp.Event(), mp.Queue(), mp.Queue()
        model = mp.Process(target=_model_process, args=(address, ready, out))
        model.start()
        ready.wait(120)
        clients = [mp.Process(target=_client, args=(address, seconds, done)) for _ in range(2)]
        for c in clients:
            c.start()
        n = sum(done.get() for _ in clients)
        for c in clients:
            c.join()
        batches, rows = out.get()
        model.join()
    return {"rps": n / seconds, "rows_per_batch": rows / max(1, batches)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.queue_probe", description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    mp.set_start_method("spawn")
    results: dict[str, list[dict]] = {"per_worker": [], "shared": []}
    for i in range(args.rounds):
        for mode in (("per_worker", "shared") if i % 2 == 0 else ("shared", "per_worker")):
            results[mode].append({"per_worker": per_worker, "shared": shared}[mode](args.seconds))
            print(f"round {i + 1} {mode}: {results[mode][-1]['rps']:.0f} req/s, "
                  f"{results[mode][-1]['rows_per_batch']:.1f} rows a batch", flush=True)
    ratio = statistics.median(s["rps"] / w["rps"] for s, w in zip(results["shared"], results["per_worker"],
                                                                 strict=True))
    print(f"shared / per_worker, median of paired rounds: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
