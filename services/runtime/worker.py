"""The model services' gunicorn worker: gthread, whose request thread waits a moment for the next request on
its keep-alive connection before handing the connection back to the worker's poller.

Why: in plain gthread every request on a kept-alive connection makes three hand-offs (thread -> poller through
a pipe, poller -> epoll, poller -> thread pool), each a context switch on a busy 2-core box. Clients in a
closed loop (the gateway's pooled connections, wrk, a Triton client) send their next request within a
millisecond or two. Measured side by side at concurrency 32 on MNIST: 4-6% more requests a second, directly and
through the gateway, and 3-6% less service CPU per request (bench/results/vm/FINDINGS.md). A thread only lingers
when no other connection is waiting for one, so it never delays a waiting request.
"""
from __future__ import annotations

import os
import select

from gunicorn.workers import gthread

LINGER_MS = float(os.environ.get("GUNICORN_KEEPALIVE_LINGER_MS", "5"))


class ThreadWorker(gthread.ThreadWorker):
    def handle(self, conn):
        keep = super().handle(conn)
        queue = getattr(self.tpool, "_work_queue", None)
        while keep is True and LINGER_MS > 0 and self.alive and queue is not None and queue.empty():
            if not conn.parser.unreader.buf.getvalue():  # nothing read ahead: wait on the socket
                poll = select.poll()
                poll.register(conn.sock, select.POLLIN)
                if not poll.poll(LINGER_MS):
                    break
            keep = super().handle(conn)
        return keep
