"""Model lifecycle in a running service: a new version is picked up without a restart and becomes the
default; a corrupted version is refused (logged, reported) while the good one keeps serving; SIGTERM
drains in-flight requests."""
from __future__ import annotations

import json
import shutil
import threading
import time

from modelcore.manifest import file_entries
from tests.conftest import REPO


def copy_version(src, dst_root, version):
    dst = dst_root / "gan" / str(version)
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["version"] = version
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_new_version_hot_loaded_and_bad_version_refused(tmp_path, monkeypatch):
    from services.gan.app import create_app
    src = REPO / "gan" / "1"
    copy_version(src, tmp_path, 1)
    monkeypatch.setenv("MODEL_REPOSITORY", str(tmp_path))
    app = create_app(poll=False)
    repo, c = app.extensions["repository"], app.test_client()
    assert c.get("/v2/models/gan").json["parameters"]["version"] == "1"
    # version 2 appears: after a poll it is the default, version 1 still answers when named
    copy_version(src, tmp_path, 2)
    repo.refresh()
    assert c.get("/v2/models/gan").json["parameters"]["version"] == "2"
    assert c.post("/api/gan/sample", json={"n": 1, "seed": 1, "version": 1}).status_code == 200
    # version 3 is corrupted: refused with a reason, version 2 keeps serving
    bad = copy_version(src, tmp_path, 3)
    with open(bad / "generator.onnx", "r+b") as f:
        f.seek(500)
        f.write(b"\xff\xff\xff")
    repo.refresh()
    status = {s["version"]: s for s in c.get("/api/models").json["models"]}
    assert status["3"]["state"] == "FAILED" and "sha256" in status["3"]["error"]
    assert c.get("/v2/models/gan").json["parameters"]["version"] == "2"
    assert c.post("/api/gan/sample", json={"n": 2, "seed": 1}).status_code == 200
    # a manifest that lies about its files (mismatched model) is refused too
    mis = copy_version(src, tmp_path, 4)
    shutil.copy(REPO / "mnist" / "1" / "model.onnx", mis / "generator.onnx")
    m = json.loads((mis / "manifest.json").read_text())
    m["files"] = file_entries(mis, list(m["files"]))
    (mis / "manifest.json").write_text(json.dumps(m))
    repo.refresh()
    assert c.get("/v2/models/gan").json["parameters"]["version"] == "2"
    assert any(s["version"] == "4" and s["state"] == "FAILED" for s in c.get("/api/models").json["models"])
    repo.close()


def test_new_version_under_load_loses_no_request(tmp_path, monkeypatch):
    """Clients keep calling while version 2 appears and version 1 is retired: every request succeeds and the
    switch is visible in the metadata."""
    from services.gan.app import create_app
    src = REPO / "gan" / "1"
    copy_version(src, tmp_path, 1)
    monkeypatch.setenv("MODEL_REPOSITORY", str(tmp_path))
    app = create_app(poll=False)
    repo = app.extensions["repository"]
    results, versions, stop = [], set(), threading.Event()

    def client():
        c = app.test_client()
        while not stop.is_set():
            r = c.post("/api/gan/sample", json={"n": 2, "seed": 3})
            results.append(r.status_code)
            if r.status_code == 200:
                versions.add(r.json["version"])
    threads = [threading.Thread(target=client) for _ in range(4)]
    [t.start() for t in threads]
    time.sleep(0.5)
    copy_version(src, tmp_path, 2)
    repo.refresh()
    time.sleep(0.5)
    shutil.rmtree(tmp_path / "gan" / "1")  # version 1 removed from disk: unloaded while requests may be in flight
    repo.refresh()
    time.sleep(0.5)
    stop.set()
    [t.join() for t in threads]
    assert len(results) > 20 and set(results) == {200}, {c: results.count(c) for c in set(results)}
    assert versions == {"1", "2"}
    assert app.test_client().get("/v2/models/gan").json["parameters"]["version"] == "2"
    repo.close()
