"""Triton's model control and statistics on one service: load and unload reach every worker (two repositories
sharing one control file stand for two gunicorn workers), polling never undoes an unload, and the statistics
count what was served."""
from __future__ import annotations

import numpy as np
import orjson
import pytest

from services.mnist.app import create_app
from services.mnist.model import MnistServable
from services.runtime.repository import ModelRepository
from tests.conftest import REPO


@pytest.fixture
def workers(tmp_path):
    control = tmp_path / "unloaded.json"
    repos = [ModelRepository(REPO, {"mnist": MnistServable}, control) for _ in range(2)]
    for r in repos:
        r.refresh()
    yield [create_app(poll=False, repository=r).test_client() for r in repos], repos
    for r in repos:
        r.close()


def infer(client, n=1):
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [n, 28, 28, 1],
                        "data": np.zeros((n, 28, 28, 1), np.float32).ravel().tolist()}]}
    return client.post("/v2/models/mnist/infer", data=orjson.dumps(body))


def test_unload_and_load_reach_every_worker(workers):
    (a, b), (repo_a, repo_b) = workers
    assert infer(b).status_code == 200
    assert a.post("/v2/repository/models/mnist/unload").status_code == 200
    for client in (a, b):  # the other worker sees it at its next request
        r = infer(client)
        assert r.status_code == 503 and "unloaded" in r.json["error"] and "/load" in r.json["error"]
        assert client.get("/v2/models/mnist/ready").status_code == 503
        index = client.post("/v2/repository/index").json
        assert {e["state"] for e in index} == {"UNAVAILABLE"} and index[0]["reason"] == "unloaded by request"
        assert client.post("/v2/repository/index", data=b'{"ready": true}').json == []
        assert client.get("/v2/health/ready").status_code == 200  # the service itself stays ready
    assert not repo_a.loaded["mnist"] and not repo_b.loaded["mnist"]  # the sessions are gone, not hidden
    repo_b.refresh()  # the poll that finds the versions on disk leaves an unloaded model alone
    assert not repo_b.loaded["mnist"] and infer(b).status_code == 503

    assert b.post("/v2/repository/models/mnist/load", data=b'{"parameters": {}}').status_code == 200
    assert infer(a).status_code == 200 and infer(b).status_code == 200
    assert a.get("/v2/models/mnist/ready").status_code == 200


def test_control_errors_name_the_field(workers):
    (a, _), _ = workers
    r = a.post("/v2/repository/models/nosuch/load")
    assert r.status_code == 404 and r.json["field"] == "model"
    r = a.post("/v2/repository/models/mnist/load", data=b'{"parameters": {"config": "{}"}}')
    assert r.status_code == 400 and r.json["field"] == "config" and "unload_dependents" in r.json["limit"]
    r = a.post("/v2/repository/models/mnist/unload", data=b'{"file": 1}')
    assert r.status_code == 400 and r.json["field"] == "file"


def test_statistics_count_requests_batches_and_failures(workers):
    (a, _), _ = workers
    before = a.get("/v2/models/mnist/stats").json["model_stats"][0]
    assert infer(a, 3).status_code == 200
    bad = a.post("/v2/models/mnist/infer", data=b'{"inputs": [{"name": "image", "datatype": "FP32", '
                                                  b'"shape": [1, 2], "data": [0, 0]}]}')
    assert bad.status_code == 400
    stats = a.get("/v2/models/mnist/stats").json["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("mnist", before["version"])]
    s, inf = stats[0], stats[0]["inference_stats"]
    assert inf["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert inf["fail"]["count"] == before["inference_stats"]["fail"]["count"] + 1
    assert inf["success"]["ns"] > before["inference_stats"]["success"]["ns"]
    assert inf["queue"]["count"] > before["inference_stats"]["queue"]["count"]
    assert s["execution_count"] > before["execution_count"] and s["last_inference"] > 0
    three = [b for b in s["batch_stats"] if b["batch_size"] == 3]
    assert three and three[0]["compute_infer"]["count"] >= 1 and three[0]["compute_infer"]["ns"] > 0
    assert [m["name"] for m in a.get("/v2/models/stats").json["model_stats"]] == ["mnist"]
    r = a.get("/v2/models/mnist/versions/99/stats")
    assert r.status_code == 404 and r.json["field"] == "version"
