"""Imported models placed across three replicas of the models service under one gateway: a zoo larger than one
replica's memory budget and smaller than three; every model answers right, each model is loaded on one replica
(their indexes say so), a hot model gets a second, and with one replica SIGKILLed every model answers again at
once, with no client error."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import requests

from bench.run import free_port
from services.gateway.placement import score
from services.runtime.budget import files_bytes
from tests.conftest import ROOT, wait_until_ready
from tests.imported import import_onnx, mlp, mlp_answer

HIDDEN, MODELS = 128, 12


def start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "services", *args], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("placement")
    for i in range(MODELS):
        import_onnx(mlp(i, HIDDEN), f"p{i:02d}", work, "--max-batch-size", "8")
    repo = work / "repo"
    budget = int(8 * 1.25 * files_bytes(repo / "p00" / "1"))  # room for eight of the twelve on a replica (1 worker)
    ports = [free_port() for _ in range(3)]
    env = {"MODEL_REPOSITORY": str(repo), "MODEL_POLL_SECONDS": "0", "WEB_CONCURRENCY": "1", "LOG_LEVEL": "warning",
           "MODEL_MEMORY_BUDGET": str(budget)}
    # each replica's control file in this test's folder: a replica killed below cannot remove its own
    replicas = [start(["models"], {**env, "PORT": str(p), "MODEL_CONTROL_FILE": str(work / f"control-{p}.json")})
                for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    gw_port = free_port()
    gateway = start(["gateway"], {"GATEWAY_PORT": str(gw_port), "GRPC_TFS_PORT": "0", "GRPC_V2_PORT": "0",
                                  "LOG_LEVEL": "warning", "BACKEND_MODELS_URL": urls[0],
                                  "GATEWAY_MODELS_REPLICAS": ",".join(urls), "GATEWAY_HOT_MODEL_RPS": "20",
                                  "GATEWAY_BREAKER_RESET_SECONDS": "30"})
    try:
        for url, proc in zip(urls, replicas, strict=True):
            wait_until_ready(url, proc)
        for _ in range(100):
            try:
                if requests.get(f"http://127.0.0.1:{gw_port}/v2/health/live", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        yield {"gateway": f"http://127.0.0.1:{gw_port}", "urls": urls, "replicas": replicas}
    finally:
        for p in [*replicas, gateway]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in [*replicas, gateway]:
            p.wait(60)


def infer(gateway: str, i: int) -> None:
    x = np.random.default_rng(i).standard_normal((1, 784)).astype(np.float32)
    r = requests.post(f"{gateway}/v2/models/p{i:02d}/infer", timeout=30, json={"inputs": [
        {"name": "x", "shape": [1, 784], "datatype": "FP32", "data": x.reshape(-1).tolist()}]})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["outputs"][0]["data"]).reshape(1, 10), mlp_answer(i, x, HIDDEN),
                               rtol=1e-4, atol=1e-4)


def holders(urls: list[str]) -> dict[str, list[str]]:
    """model -> the replicas where it is loaded, from each replica's own index."""
    out: dict[str, list[str]] = {}
    for url in urls:
        for m in requests.post(f"{url}/v2/repository/index", json={"ready": True}, timeout=10).json():
            out.setdefault(m["name"], []).append(url)
    return out


def order(model: str, urls: list[str]) -> list[str]:
    """The gateway's order of the replicas for ``model`` (the placement's own hash)."""
    return sorted(urls, key=lambda u: score(model, u), reverse=True)


def test_models_are_placed_once_a_hot_one_twice_and_survive_a_killed_replica(cluster):
    # checked right after each model's request: a replica given more than its room of eight evicts the least
    # recently used, and how many land on each replica depends on the ports' hash
    gateway, urls = cluster["gateway"], cluster["urls"]
    names = [f"p{i:02d}" for i in range(MODELS)]
    for i in range(MODELS):
        infer(gateway, i)
    for i, name in enumerate(names):
        infer(gateway, i)
        assert holders(urls)[name] == [order(name, urls)[0]], name  # on its first replica only
    held = holders(urls)
    assert all(len(held.get(n, [])) <= 1 for n in names), held
    assert all(sum(u in r for r in held.values()) <= 8 for u in urls), held  # each replica within its budget
    assert len({order(n, urls)[0] for n in names}) >= 2  # shared out (the hash's balance: unit tests)

    for _ in range(60):  # over 20 requests a second: the hot model gets a second replica
        infer(gateway, 0)
    assert sorted(holders(urls)["p00"]) == sorted(order("p00", urls)[:2])

    victim = order("p01", urls)[0]
    proc = cluster["replicas"][urls.index(victim)]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    t0 = time.monotonic()
    for i in range(MODELS):  # the killed replica's models answer from the next in their order, at once
        infer(gateway, i)
    assert time.monotonic() - t0 < 10
    survivors = [u for u in urls if u != victim]
    for i, name in enumerate(names):
        if order(name, urls)[0] == victim:
            infer(gateway, i)
            assert order(name, urls)[1] in holders(survivors)[name], name
