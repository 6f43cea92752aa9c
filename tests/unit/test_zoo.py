"""A zoo of imported models under a memory budget, in the models service (Flask's test client, the poll called by
hand): models load on their first request, the least recently used go when a load needs room, the bytes in use
never pass the budget, a pinned model stays, one larger than the budget is refused with both sizes, concurrent
first requests share one load, and requests on a model being evicted all finish."""
from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.imported import import_onnx, mlp, mlp_answer

HIDDEN = 128  # 0.4 MB of weights a model
MODELS = 32


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """32 imported MLPs, each its own weights, and one too large for the budget: their repository."""
    work = tmp_path_factory.mktemp("zoo")
    for i in range(MODELS):
        import_onnx(mlp(i, HIDDEN), f"m{i:02d}", work, "--max-batch-size", "8")
    import_onnx(mlp(99, 8192), "huge", work, "--max-batch-size", "1")  # 26 MB
    return work / "repo"


def service(repo, monkeypatch, budget: int):
    monkeypatch.setenv("MODEL_REPOSITORY", str(repo))
    monkeypatch.setenv("MODEL_MEMORY_BUDGET", str(budget))
    monkeypatch.setenv("WEB_CONCURRENCY", "1")  # the budget is the pod's, shared out over its workers: one here
    from services.models.app import create_app
    from services.settings import ServiceSettings
    ServiceSettings.load.cache_clear()  # read again, as a service started with this budget would
    app = create_app(poll=False)
    return app, app.extensions["repository"], app.test_client()


class Sampler:
    """The budget's bytes in use, read every millisecond on a thread, and the most it held."""

    def __init__(self, budget):
        self.budget, self.peak, self.stop = budget, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.001):
            self.peak = max(self.peak, self.budget.in_use)

    def close(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.peak


def infer(client, name: str, seed: int, version: str = ""):
    x = np.random.default_rng(seed).standard_normal((2, 784)).astype(np.float32)
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    r = client.post(path, json={"inputs": [{"name": "x", "shape": [2, 784], "datatype": "FP32",
                                            "data": x.reshape(-1).tolist()}]})
    assert r.status_code == 200, r.json
    got = np.array(r.json["outputs"][0]["data"], np.float32).reshape(2, 10)
    np.testing.assert_allclose(got, mlp_answer(seed, x, HIDDEN), rtol=1e-4, atol=1e-4)


def count(metric: str, model: str) -> float:
    """A counter of this process (the tests share it: compare before and after)."""
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value(metric, {"model": model}) or 0.0


def index(client) -> dict:
    return {m["name"]: m for m in client.post("/v2/repository/index", json={}).json}


def one_model_bytes(zoo, monkeypatch) -> int:
    """What one model's load adds, as the service measures it."""
    app, repo, client = service(zoo, monkeypatch, 10**12)
    try:
        infer(client, "m00", 0)
        return repo.budget.sizes[("m00", 1)]
    finally:
        repo.close()


def test_a_budget_a_third_of_the_zoo_serves_every_model_and_is_never_passed(zoo, monkeypatch):
    size = one_model_bytes(zoo, monkeypatch)
    (zoo / "m31" / "serving.json").write_text(json.dumps({"pinned": True}))
    try:
        evicted_before = {m: count("model_evictions_total", m) for m in ("m00", "m31")}
        app, repo, client = service(zoo, monkeypatch, MODELS // 3 * size)
        assert list(repo.loaded["m31"]) == [1]  # pinned: loaded at start
        found = index(client)
        assert found["m05"]["state"] == "UNLOADED" and found["m05"]["reason"] == "loads on its next request"
        sampler = Sampler(repo.budget)
        for _round in range(2):
            for i in range(MODELS):
                infer(client, f"m{i:02d}", i)
        peak = sampler.close()
        assert peak <= repo.budget.limit, (peak, repo.budget.limit)
        found = index(client)
        ready = sorted(n for n, m in found.items() if m["state"] == "READY")
        assert 4 <= len(ready) <= MODELS // 3 + 1 and "m31" in ready, ready
        assert found["m00"]["state"] == "UNLOADED", found["m00"]  # least recently used: evicted
        assert count("model_evictions_total", "m00") - evicted_before["m00"] == 2  # once a round
        assert count("model_evictions_total", "m31") == evicted_before["m31"]  # pinned: never evicted
        metrics = client.get("/metrics").get_data(as_text=True)
        assert "model_memory_in_use_bytes" in metrics and "model_cold_start_seconds_count" in metrics

        r = client.post("/v2/models/huge/infer", json={"inputs": []})
        assert r.status_code == 503, r.json
        assert "more than the whole memory budget" in r.json["error"] and str(repo.budget.limit) in r.json["error"]
        assert "its files hold 26" in r.json["error"], r.json
        assert index(client)["huge"]["state"] == "UNAVAILABLE"
        infer(client, "m07", 7)  # the others keep serving
        repo.close()
    finally:
        (zoo / "m31" / "serving.json").unlink()


def test_concurrent_first_requests_share_one_load_and_keep_the_budget(zoo, monkeypatch):
    size = one_model_bytes(zoo, monkeypatch)
    app, repo, client = service(zoo, monkeypatch, MODELS // 3 * size)
    sampler = Sampler(repo.budget)
    loads_before = count("model_loads_total", "m03")
    with ThreadPoolExecutor(32) as pool:  # 32 cold models at once, then 32 requests for one cold model
        list(pool.map(lambda i: infer(client, f"m{i:02d}", i), range(MODELS)))
        list(pool.map(lambda i: infer(client, "m03", 3), range(32)))
    assert sampler.close() <= repo.budget.limit
    # once among the 32 cold ones, and at most once more if it was evicted before the 32 requests for it
    assert count("model_loads_total", "m03") - loads_before in (1, 2)
    repo.close()


def test_requests_on_models_being_evicted_all_finish(zoo, monkeypatch):
    """A budget of about one model, and eight threads asking three models in turn: every request evicts another
    model, most of them with requests in flight; every one answers right."""
    size = one_model_bytes(zoo, monkeypatch)
    app, repo, client = service(zoo, monkeypatch, int(size * 1.5))
    sampler = Sampler(repo.budget)
    evictions_before = sum(count("model_evictions_total", f"m{i:02d}") for i in range(3))

    def client_loop(t):
        for k in range(12):
            i = (t + k) % 3
            infer(client, f"m{i:02d}", i)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client_loop, range(8)))
    assert sampler.close() <= repo.budget.limit
    evictions = sum(count("model_evictions_total", f"m{i:02d}") for i in range(3)) - evictions_before
    assert evictions >= 10, evictions
    repo.close()


def test_an_older_version_loads_when_named_and_goes_first(zoo, monkeypatch, tmp_path):
    repo_dir = tmp_path / "repo"
    shutil.copytree(zoo / "m01", repo_dir / "m01")
    shutil.copytree(zoo / "m02", repo_dir / "m02")
    shutil.copytree(zoo / "m01" / "1", repo_dir / "m01" / "2")  # the same files as version 2
    manifest = json.loads((repo_dir / "m01" / "2" / "manifest.json").read_text())
    (repo_dir / "m01" / "2" / "manifest.json").write_text(json.dumps({**manifest, "version": 2}))
    from services.runtime.budget import files_bytes
    files = files_bytes(repo_dir / "m01" / "1")  # a load makes room for 1.25 times its files, and is charged at
    app, repo, client = service(repo_dir, monkeypatch, int(files * 2.6))  # least its files: room for two
    infer(client, "m01", 1)
    assert list(repo.loaded["m01"]) == [2]  # only the newest loads by default
    infer(client, "m01", 1, version="1")
    assert sorted(repo.loaded["m01"]) == [1, 2]
    infer(client, "m02", 2)  # room for two: the older version goes first, though m01 v2 was used before it
    assert list(repo.loaded["m01"]) == [2] and list(repo.loaded["m02"]) == [1]
    repo.close()


def test_pinned_models_past_the_budget_leave_the_service_up_and_say_why(zoo, monkeypatch, tmp_path):
    from services.runtime.budget import files_bytes
    repo_dir = tmp_path / "repo"
    for i in range(3):
        shutil.copytree(zoo / f"m{i:02d}", repo_dir / f"m{i:02d}")
    for i in range(2):
        (repo_dir / f"m{i:02d}" / "serving.json").write_text(json.dumps({"pinned": True}))
    app, repo, client = service(repo_dir, monkeypatch, int(files_bytes(repo_dir / "m00" / "1") * 1.3))
    assert client.get("/v2/health/ready").status_code == 200  # room for one pinned model: the other waits
    assert sum(bool(repo.loaded[f"m{i:02d}"]) for i in range(2)) == 1
    r = client.post("/v2/models/m02/infer", json={"inputs": []})
    assert r.status_code == 503 and "held by pinned models" in r.json["error"], r.json
    repo.close()


def test_a_request_waiting_for_a_cold_load_keeps_to_its_v2_timeout(zoo, monkeypatch):
    """The v2 ``timeout`` parameter counts from the request's start, the wait for a cold load included."""
    app, repo, client = service(zoo, monkeypatch, 10**12)
    slow_factory = repo.factories["m05"]

    def slow(*args, **kwargs):
        loading.set()
        threading.Event().wait(1.0)
        return slow_factory(*args, **kwargs)
    loading = threading.Event()
    monkeypatch.setitem(repo.factories, "m05", slow)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(infer, client, "m05", 5)  # the load, with no deadline of its own
        assert loading.wait(10)
        r = client.post("/v2/models/m05/infer", json={"parameters": {"timeout": 200_000}, "inputs": [
            {"name": "x", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}]})
        assert r.status_code == 504 and r.json["field"] == "timeout", r.json
        first.result()
    repo.close()
