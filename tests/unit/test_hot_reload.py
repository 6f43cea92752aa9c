"""Hot reload as it runs in production: the repository's own poll thread (``MODEL_POLL_SECONDS=0.5``) on a
copied repository, no explicit ``refresh`` call. Versions appear, go, and are repaired on disk; the service
follows within a bounded number of polls."""
from __future__ import annotations

import shutil
import time

import pytest
from prometheus_client import REGISTRY

from tests.conftest import REPO
from tests.unit.test_lifecycle import copy_version

POLL = 0.5
BOUND = 30  # seconds: many polls, enough for a load and warm-up on a busy 2-core machine


def wait_for(check, what: str):
    deadline = time.time() + BOUND
    while not check():
        assert time.time() < deadline, f"not within {BOUND} s of polling: {what}"
        time.sleep(0.1)


def served_version(c) -> str | None:
    r = c.get("/v2/models/gan")
    return r.json["parameters"]["version"] if r.status_code == 200 else None


@pytest.fixture
def polling_gan(tmp_path, monkeypatch):
    """-> (repository folder, test client) of the gan service polling its own copy of the repository."""
    from services.gan.app import create_app
    monkeypatch.setenv("MODEL_REPOSITORY", str(tmp_path))
    monkeypatch.setenv("MODEL_POLL_SECONDS", str(POLL))
    apps = []

    def start():
        apps.append(create_app(poll=True))
        return apps[-1].test_client()
    yield tmp_path, start
    for app in apps:
        app.extensions["repository"].close()


def test_versions_added_and_removed_on_disk_are_followed_by_the_poll(polling_gan):
    root, start = polling_gan
    copy_version(REPO / "gan" / "1", root, 1)
    c = start()
    assert served_version(c) == "1"
    copy_version(REPO / "gan" / "1", root, 2)
    wait_for(lambda: served_version(c) == "2", "version 2 added")
    assert c.post("/api/gan/sample", json={"n": 1, "seed": 1, "version": 1}).status_code == 200

    shutil.rmtree(root / "gan" / "2")  # the newest goes: the one before it serves again
    wait_for(lambda: served_version(c) == "1", "fall back to version 1")
    r = c.post("/v2/models/gan/versions/2/infer",
               json={"inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, 100], "data": [0.0] * 100}]})
    assert r.status_code == 404 and "version 2" in r.json["error"] and "loaded: [1]" in r.json["error"], r.json
    r = c.post("/api/gan/sample", json={"n": 1, "version": 2})
    assert r.status_code == 404 and "loaded: [1]" in r.json["error"], r.json

    shutil.rmtree(root / "gan" / "1")  # nothing left: the model is unavailable, by name
    wait_for(lambda: served_version(c) is None, "every version removed")
    r = c.post("/api/gan/sample", json={"n": 1})
    assert r.status_code == 503 and "'gan'" in r.json["error"], r.json
    assert c.get("/v2/models/gan/ready").status_code != 200


def failures(version: int) -> float:
    return REGISTRY.get_sample_value("model_load_failures_total", {"model": "gan", "version": str(version)}) or 0.0


def test_a_tampered_version_is_refused_then_loaded_once_repaired(polling_gan):
    root, start = polling_gan
    copy_version(REPO / "gan" / "1", root, 1)
    bad = copy_version(REPO / "gan" / "1", root, 2)
    graph = bad / "generator.onnx"
    original = graph.read_bytes()
    tampered = bytearray(original)
    tampered[500:503] = b"\xff\xff\xff"
    graph.write_bytes(bytes(tampered))
    before = failures(2)
    c = start()
    assert served_version(c) == "1"  # the previous version serves
    assert failures(2) == before + 1
    status = {m["version"]: m for m in c.get("/api/models").json["models"]}
    assert status["2"]["state"] == "FAILED" and "sha256" in status["2"]["error"]
    time.sleep(3 * POLL)  # a refusal is not retried while the files stay as they are
    assert failures(2) == before + 1

    graph.write_bytes(original)  # repaired: the manifest is untouched, the graph changed
    wait_for(lambda: served_version(c) == "2", "the repaired version 2 loads")
    assert "2" not in {m["version"] for m in c.get("/api/models").json["models"] if m["state"] == "FAILED"}
