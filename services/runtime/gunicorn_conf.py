"""gunicorn settings for every service and the gateway, from ProcessSettings (services/settings.py).

Services: gthread workers, whose request threads hand work to the in-process batcher / scheduler threads.
Python request handling holds the GIL, so one worker per usable CPU (WEB_CONCURRENCY; see
config.web_workers), each with its own batcher and its own listening socket (reuse_port, below). The gateway
overrides the worker class with its uvicorn worker (``python -m services gateway``). On SIGTERM gunicorn stops
accepting, lets in-flight requests finish within GUNICORN_GRACEFUL_TIMEOUT, then exits.
"""
import os
import shutil
import tempfile
from pathlib import Path

from services.runtime.config import web_workers
from services.settings import ProcessSettings, ServiceSettings

_process = ProcessSettings.from_env()
bind = f"{_process.bind_host}:{_process.port or 8000}"
workers = web_workers(_process)
_made: list[str] = []  # temporary folders this master made, removed when it exits (``on_exit``)
_metrics_dir = _process.metrics_dir
if workers > 1 and not _metrics_dir:
    # several workers: /metrics must sum them, through prometheus_client's multiprocess files (the variable is
    # prometheus_client's own)
    _made.append(tempfile.mkdtemp(prefix="prometheus-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"], _metrics_dir = _made[-1], Path(_made[-1])
if not ServiceSettings.from_env().model_control_file:
    # explicit model loads and unloads (Triton's model control), seen by every worker; afresh at each start
    _made.append(tempfile.mkdtemp(prefix="model-control-"))
    os.environ["MODEL_CONTROL_FILE"] = os.path.join(_made[-1], "unloaded.json")
worker_class = "gthread"
threads = _process.threads
timeout = 120  # a worker silent this long is restarted
graceful_timeout = _process.graceful_timeout
keepalive = 75  # longer than the usual load balancer's idle timeout (60 s), so the balancer closes first
backlog = 2048
accesslog = None  # the app writes JSON access logs itself
errorlog = "-"
loglevel = _process.log_level
# gunicorn's runtime control socket would be one path per user, shared by several services on one host, and
# a read-only root filesystem (Kubernetes) cannot hold it
control_socket_disable = True


def on_starting(server):
    """A restarted master starts its metrics afresh: prometheus_client's multiprocess files of an earlier run
    would otherwise be summed with the new ones."""
    if _metrics_dir and _metrics_dir.is_dir():
        for db in _metrics_dir.glob("*.db"):
            db.unlink()


def on_exit(server):
    """Nothing is left in the temporary folder once the master has stopped (Ctrl-C, SIGTERM, or a failed start)."""
    for folder in _made:
        shutil.rmtree(folder, ignore_errors=True)


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
    if _metrics_dir:
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)


# Balance: keep-alive clients open their connections at once, and on one shared socket the first worker to wake
# keeps most of them (measured in bench/results/vm/FINDINGS.md). With reuse_port, gunicorn
# gives each worker its own SO_REUSEPORT listener and the kernel spreads new connections evenly; a second stack
# cannot join, because `python -m services` refuses a port already bound.
reuse_port = True
