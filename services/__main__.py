"""``python -m services NAME``: run one service (or the gateway) under gunicorn with its default port.

NAME: mnist (9001), sentiment (9002), translation (9003), textgen (9004), gan (9005), gateway (8080).
The port comes from PORT (or GATEWAY_PORT for the gateway) when set.
"""
from __future__ import annotations

import os
import sys

SERVICES = {"mnist": 9001, "sentiment": 9002, "translation": 9003, "textgen": 9004, "gan": 9005, "gateway": 8080}
# request threads per worker where the default (16) is too few: a stream holds its thread for its whole life,
# and connections past the threads of the worker the kernel gave them to wait for a whole generation
THREADS = {"textgen": 64}
# ONNX Runtime threads per worker where the default (2) costs more than it gives: a text-generation step is a
# [streams, 384] LSTM cell, too small to split well; with one thread per worker, the service's two workers
# use two threads on two CPUs instead of four, and 32 streams get about 9% more tokens/s per CPU (one stream
# alone is about 7% slower; bench/results/vm/FINDINGS.md)
ORT_THREADS = {"textgen": 1}
# gunicorn workers where one per CPU is too many: the gateway's event loop proxies thousands of requests a
# second in one process, and a second one would only take CPU from the model services beside it
WORKERS = {"gateway": 1}
# Linux scheduling policy of a worker's threads (gunicorn_conf.post_fork). Model services run SCHED_BATCH: a
# thread woken by a socket or a queue does not preempt the thread running on that CPU (the gateway's event
# loop, a batcher, a decoding scheduler, the client) but waits for the CPU's next tick or an idle CPU, so a
# busy CPU finishes its work before switching. Measured side by side at MNIST c=32 on the 2-core box: direct
# +4%, through the gateway +10%, p99 unchanged (bench/results/vm/FINDINGS.md). The gateway gained nothing
# from it and stays SCHED_OTHER; no privilege is needed to lower a policy to SCHED_BATCH.
# textgen runs only the threads that keep a CPU busy as SCHED_BATCH (COMPUTE_SCHED_POLICY: the decoding
# scheduler and the SSE flusher; services/runtime/scheduling.py): its request threads wake twice a generation
# (first token, end), and as SCHED_BATCH each of those waited for the CPU's next tick, 7-20 ms at 32 streams,
# while its row sat idle. Measured side by side, 3 runs of 4 rounds: 32 SSE streams +0.6 to +3.2% tokens/s
# (15 of 16 pairs ahead), one stream unchanged, p99 time to first token at 32 streams 47-73 against 56-77 ms.
SCHED_POLICY = {name: "batch" for name in SERVICES if name not in ("gateway", "textgen")}
COMPUTE_SCHED_POLICY = {name: "batch" for name in SERVICES if name != "gateway"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SERVICES:
        print(f"usage: python -m services {{{','.join(SERVICES)}}} [gunicorn options]", file=sys.stderr)
        return 2
    name, extra = argv[0], argv[1:]
    port = os.environ.get("GATEWAY_PORT" if name == "gateway" else "PORT") or str(SERVICES[name])
    os.environ["PORT"] = port
    if name in THREADS:
        os.environ.setdefault("GUNICORN_THREADS", str(THREADS[name]))
    if name in ORT_THREADS:
        os.environ.setdefault("ORT_INTRA_OP_THREADS", str(ORT_THREADS[name]))
    if name in WORKERS:
        os.environ.setdefault("WEB_CONCURRENCY", str(WORKERS[name]))
    if name in SCHED_POLICY:
        os.environ.setdefault("WORKER_SCHED_POLICY", SCHED_POLICY[name])
    if name in COMPUTE_SCHED_POLICY:
        os.environ.setdefault("COMPUTE_SCHED_POLICY", COMPUTE_SCHED_POLICY[name])
    worker = ["-k", "services.gateway.worker.GatewayWorker"] if name == "gateway" else []
    args = ["gunicorn", "-c", "python:services.runtime.gunicorn_conf", "--name", name, *worker, *extra,
            f"services.{name}.app:create_app()"]
    os.execvp(sys.executable, [sys.executable, "-m", *args])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
