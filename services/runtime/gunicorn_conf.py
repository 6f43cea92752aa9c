"""gunicorn settings for every service and the gateway, from the environment.

Services: gthread workers, whose request threads hand work to the in-process batcher / scheduler threads.
Python request handling holds the GIL, so one worker per usable CPU (WEB_CONCURRENCY; see
config.web_workers), each with its own batcher; the workers share their master's listening socket. The gateway
overrides the worker class with its uvicorn worker (``python -m services gateway``). On SIGTERM gunicorn stops
accepting, lets in-flight requests finish within GUNICORN_GRACEFUL_TIMEOUT, then exits.
"""
import os
import tempfile

from services.runtime.config import web_workers

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = web_workers()
if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # several workers: /metrics must sum them, through prometheus_client's multiprocess files
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-")
worker_class = "gthread"
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


def on_starting(server):
    """A restarted master starts its metrics afresh: prometheus_client's multiprocess files of an earlier run
    would otherwise be summed with the new ones."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder and os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.endswith(".db"):
                os.unlink(os.path.join(folder, name))


def post_fork(server, worker):
    """Workers die with their master: if the master is killed (SIGKILL, OOM), its workers must not linger
    on the port, or a restarted master cannot bind and the old code keeps answering."""
    import ctypes
    import signal
    import sys
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def child_exit(server, worker):
    """A dead worker's live gauges must stop counting in the multiprocess metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)
