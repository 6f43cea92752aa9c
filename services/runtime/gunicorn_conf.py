"""gunicorn settings for every service and the gateway, from the environment.

Services: gthread workers (``worker.py``: a request thread lingers a moment on its keep-alive connection),
whose request threads hand work to the in-process batcher / scheduler threads.
Python request handling holds the GIL, so one worker per usable CPU (WEB_CONCURRENCY; see
config.web_workers), each with its own batcher. The gateway overrides the worker class with its uvicorn worker
(``python -m services gateway``). On SIGTERM gunicorn stops accepting, lets in-flight requests finish within
GUNICORN_GRACEFUL_TIMEOUT, then exits.
"""
import os
import tempfile

import gunicorn.http.wsgi

from services.runtime.config import web_workers

gunicorn.http.wsgi.SERVER = "model-server"  # no product or version in the Server header
if os.environ.get("GUNICORN_ONE_WRITE", "1") == "1":
    from services.runtime import one_write
    one_write.install()

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = web_workers()
if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # several workers: /metrics must sum them, through prometheus_client's multiprocess files
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-")
worker_class = "services.runtime.worker.ThreadWorker"  # gthread, lingering on keep-alive (worker.py)
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
backlog = int(os.environ.get("GUNICORN_BACKLOG", "2048"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
accesslog = None  # the app writes JSON access logs itself
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or None
# gunicorn's runtime control socket defaults to one path per user: several services on one host would
# share it, and a read-only root filesystem (Kubernetes) cannot hold it. Off unless asked for.
control_socket_disable = os.environ.get("GUNICORN_CONTROL_SOCKET", "") == ""
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or "/tmp/gunicorn.ctl"


def post_fork(server, worker):
    """Workers die with their master: if the master is killed (SIGKILL, OOM), its workers must not linger
    on the port, or a restarted master cannot bind and the old code keeps answering. And the worker takes
    WORKER_SCHED_POLICY (``batch``: SCHED_BATCH; why in services/__main__.py), which every thread it starts
    inherits."""
    import ctypes
    import signal
    import sys
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    from services.runtime import scheduling
    scheduling.apply(os.environ.get("WORKER_SCHED_POLICY"), f"worker {worker.pid}", server.log)


def child_exit(server, worker):
    """A dead worker's live gauges must stop counting in the multiprocess metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)


# Keep-alive clients open their connections at once and keep them; with one shared listening socket the
# first worker to wake takes most of them and the other workers idle (measured: 32 wrk connections split
# 32/0 in half the runs, halving throughput). Each worker therefore also listens on its own SO_REUSEPORT
# socket on the same address, and the kernel spreads new connections across the sockets evenly.
reuse_port = os.environ.get("GUNICORN_WORKER_SOCKETS", "1") == "1"


def post_worker_init(worker):
    if not reuse_port or workers < 2:
        return
    import socket
    for listener in list(worker.sockets):
        addr = listener.getsockname()
        if not isinstance(addr, tuple):  # unix sockets cannot be shared this way
            continue
        own = socket.socket(listener.family, socket.SOCK_STREAM)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # as gunicorn sets on its own listener: without it a response written as headers then body waits
        # for the client's delayed ACK (40 ms per request on a lone keep-alive connection, measured)
        own.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        own.bind(addr)
        own.listen(backlog)
        own.setblocking(False)
        worker.sockets.append(own)
