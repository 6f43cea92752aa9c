"""Version labels and canary traffic from ``NAME/serving.json``: requests by label on every HTTP route, the
share of unversioned requests the canary gets, which version answered, and refusals that keep the routing."""
from __future__ import annotations

import json
import math

import pytest

from tests.conftest import REPO
from tests.unit.test_lifecycle import copy_version

LATENT = {"inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, 100], "data": [0.0] * 100}]}


@pytest.fixture
def gan(tmp_path, monkeypatch):
    """-> (repository, test client, serving.json writer) of a gan service with versions 1 and 2."""
    from services.gan.app import create_app
    copy_version(REPO / "gan" / "1", tmp_path, 1)
    copy_version(REPO / "gan" / "1", tmp_path, 2)
    monkeypatch.setenv("MODEL_REPOSITORY", str(tmp_path))
    app = create_app(poll=False)
    repo = app.extensions["repository"]

    def serving(cfg: dict) -> None:
        (tmp_path / "gan" / "serving.json").write_text(json.dumps(cfg))
        repo.refresh()
    yield repo, app.test_client(), serving
    repo.close()


def test_canary_traffic_takes_its_share_of_unversioned_requests_and_stable_the_rest(gan):
    _, c, serving = gan
    serving({"labels": {"stable": 1, "canary": 2}, "traffic": {"canary": 20}})
    n = 2000
    versions = [c.post("/v2/models/gan/infer", json=LATENT).json["model_version"] for _ in range(n)]
    canary, sd = versions.count("2"), math.sqrt(n * 0.2 * 0.8)
    assert abs(canary - 0.2 * n) < 4.5 * sd, canary  # binomial(2000, 0.2): 400 +- 18 per standard deviation
    assert set(versions) == {"1", "2"}
    # a request that names a version or a label is not part of the split
    assert {c.post("/v2/models/gan/versions/stable/infer", json=LATENT).json["model_version"]
            for _ in range(50)} == {"1"}


def test_every_http_route_takes_a_label_and_says_which_version_answered(gan):
    _, c, serving = gan
    serving({"labels": {"stable": 1, "canary": 2}})
    r = c.post("/api/gan/sample", json={"n": 1, "seed": 1, "version": "stable"})
    assert r.status_code == 200 and r.json["version"] == "1" and r.headers["X-Model-Version"] == "1"
    r = c.post("/v1/models/gan/labels/canary:predict", json={"instances": [[0.0] * 100]})
    assert r.status_code == 200 and r.headers["X-Model-Version"] == "2"
    assert c.get("/v1/models/gan/labels/stable/metadata").json["model_spec"]["version"] == "1"
    assert [s["version"] for s in c.get("/v1/models/gan/labels/canary").json["model_version_status"]] == ["2"]
    assert c.post("/v2/models/gan/versions/canary/infer", json=LATENT).json["model_version"] == "2"
    assert c.post("/v2/models/gan/infer", json=LATENT).headers["X-Model-Version"] == "1"  # no traffic: stable
    serving({"labels": {"canary": 2, "old": 1}})
    assert c.post("/v2/models/gan/infer", json=LATENT).headers["X-Model-Version"] == "2"  # no stable: newest
    r = c.post("/v2/models/gan/versions/beta/infer", json=LATENT)
    assert r.status_code == 404 and r.json["field"] == "version" and "labels: ['canary', 'old']" in r.json["error"]


@pytest.mark.parametrize("bad, why", [
    ({"labels": {"stable": 1, "canary": 7}}, "label 'canary' names version 7, which is not loaded (loaded: [1, 2])"),
    ({"labels": {"stable": 1}, "traffic": {"canary": 10}}, "traffic names label 'canary'"),
    ({"labels": {"stable": 1}, "traffic": {"stable": 120}}, "'traffic.stable' is 120; it must lie in 0..100"),
    ({"label": {"stable": 1}}, "unknown field 'label' (did you mean 'labels'?)"),
])
def test_a_file_that_names_the_unknown_is_refused_and_the_routing_stays(gan, caplog, bad, why):
    repo, c, serving = gan
    serving({"labels": {"stable": 1, "canary": 2}})
    with caplog.at_level("ERROR", logger="runtime.repository"):
        serving(bad)
    assert any(why in r.getMessage() and "the previous routing stays" in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]
    assert repo.serving["gan"]["labels"] == {"stable": 1, "canary": 2}
    assert c.post("/v2/models/gan/versions/canary/infer", json=LATENT).json["model_version"] == "2"
