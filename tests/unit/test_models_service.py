"""The models service on a repository of its own (Flask's test client, the poll called by hand): it finds every
imported model, leaves the families' models to their services, refuses what is not an imported model or fails
its checks without losing readiness, and lets a removed model go."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelcore.datatypes import TABLE
from tests.conftest import REPO, latest
from tests.imported import every_datatype, import_onnx


@pytest.fixture()
def service(tmp_path, monkeypatch):
    repo = tmp_path / "repository"
    repo.mkdir()
    (repo / "mnist").symlink_to(REPO / "mnist")  # a family's model: its own service serves it, not this one
    monkeypatch.setenv("MODEL_REPOSITORY", str(repo))
    from services.models.app import create_app
    app = create_app(poll=False)
    yield repo, app.extensions["repository"], app.test_client()
    app.extensions["repository"].close()


def index(client) -> dict:
    return {(m["name"], m["version"]): m for m in client.post("/v2/repository/index", json={}).json}


def test_models_come_and_go_with_their_folders(service, tmp_path):
    repo, repository, client = service
    assert client.get("/v2/health/ready").status_code == 200 and index(client) == {}  # nothing imported: ready
    shutil.copytree(import_onnx(every_datatype(), "typed", tmp_path, "--allow-fp64"), repo / "typed")
    repository.refresh()
    assert list(index(client)) == [("typed", "1")]  # mnist is not this service's
    body = {"inputs": [{"name": "int64", "datatype": "INT64", "shape": [1, 2], "data": [3, 4]}]}
    r = client.post("/v2/models/typed/infer", json=body)
    assert r.status_code == 400 and "needs input" in r.json["error"]  # every input is required
    example = client.get("/api/models").json["models"][0]["example"]
    r = client.post("/v2/models/typed/infer", json=example)
    assert r.status_code == 200 and len(r.json["outputs"]) == len(TABLE)
    shutil.rmtree(repo / "typed")
    repository.refresh()
    assert index(client) == {}
    r = client.post("/v2/models/typed/infer", json=example)
    assert r.status_code == 404 and r.json["error"] == ("model 'typed' is neither a shipped nor an imported model "
                                                        "(imported: none; every model: GET /api/models)")


def test_what_is_not_an_imported_model_or_fails_its_checks_is_refused_and_reported(service, tmp_path):
    repo, repository, client = service
    family = repo / "mnist_copy" / "1"
    shutil.copytree(latest("mnist"), family)
    manifest = json.loads((family / "manifest.json").read_text())
    (family / "manifest.json").write_text(json.dumps({**manifest, "name": "mnist_copy"}))
    tampered = repo / "tampered"
    shutil.copytree(import_onnx(every_datatype(), "tampered", tmp_path, "--allow-fp64"), tampered)
    with open(tampered / "1" / "model.onnx", "ab") as f:
        f.write(b"\0")
    repository.refresh()
    found = index(client)  # models load on their first request: until then, nothing is known against them
    assert {found[k]["state"] for k in [("mnist_copy", "1"), ("tampered", "1")]} == {"UNLOADED"}, found
    r = client.post("/v2/models/tampered/infer", json={"inputs": []})
    assert r.status_code == 503 and "version 1 of model 'tampered' was refused" in r.json["error"], r.json
    assert "sha256" in r.json["error"]
    assert client.get("/v2/models/mnist_copy").status_code == 503
    found = index(client)
    assert found[("mnist_copy", "1")]["state"] == "UNAVAILABLE"
    assert "image-classification model, not an imported one" in found[("mnist_copy", "1")]["reason"]
    assert "sha256" in found[("tampered", "1")]["reason"]
    assert client.get("/v2/health/ready").status_code == 200  # a broken import does not take the others out


def test_a_runtime_error_the_request_caused_is_a_400_with_the_runtimes_words(service, tmp_path):
    """An id past an embedding table and an image below a convolution's kernel pass the tensor checks, then ONNX
    Runtime refuses them: the client gets a 400 quoting it, as Triton does, and the service keeps answering."""
    repo, repository, client = service
    table = numpy_helper.from_array(np.zeros((1000, 4), np.float32), "table")
    kernel = numpy_helper.from_array(np.ones((2, 1, 5, 5), np.float32), "kernel")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["embedded"]), helper.make_node("Conv", ["image", "kernel"],
                                                                                      ["features"])],
        "lookup_and_conv", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, 3]),
                            helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 1, None, None])],
        [helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [None, 3, 4]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 2, None, None])], [table, kernel])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    samples = tmp_path / "samples.npz"
    np.savez(samples, ids=np.array([[1, 2, 3], [4, 5, 6]]), image=np.zeros((2, 1, 8, 8), np.float32))
    shutil.copytree(import_onnx(model, "lookup", tmp_path, "--samples", str(samples)), repo / "lookup")
    repository.refresh()

    def body(ids, side):
        return {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 3], "data": ids},
                           {"name": "image", "datatype": "FP32", "shape": [1, 1, side, side], "data": [0.0] * side**2}]}
    r = client.post("/v2/models/lookup/infer", json=body([1, 5000, 2], 8))
    assert r.status_code == 400, r.json
    assert r.json["error"].startswith("model 'lookup' cannot run on the values of input(s) ['ids', 'image']: ONNX "
                                      "Runtime says: indices element out of data bounds, idx=5000 must be within")
    r = client.post("/v1/models/lookup:predict", json={"instances": [{"ids": [1, 2, 3], "image": [[[0.0] * 3] * 3]}]})
    assert r.status_code == 400 and "Invalid input shape" in r.json["error"], r.json
    assert client.post("/v2/models/lookup/infer", json=body([1, 2, 3], 8)).status_code == 200


def test_the_advertised_batch_is_one_a_request_can_carry(service, tmp_path):
    """The v2 config's max_batch_size: the row limit, or the rows of fixed-size tensors a binary request holds
    within the body limit (16 MiB: 27 images of 224x224x3 FP32), and the advertised batch is then accepted."""
    repo, repository, client = service
    pictures = helper.make_model(helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0)], "pictures",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 224, 224, 3])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [None])]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    shutil.copytree(import_onnx(pictures, "pictures", tmp_path, "--max-batch-size", "8"), repo / "pictures")
    shutil.copytree(import_onnx(every_datatype(), "typed", tmp_path, "--allow-fp64"), repo / "typed")
    repository.refresh()
    advertised = client.get("/v2/models/pictures/config").json["max_batch_size"]
    assert advertised == (16 * 1024 * 1024 - 64 * 1024) // (224 * 224 * 3 * 4) == 27
    x = np.random.default_rng(0).random((advertised, 224, 224, 3), dtype=np.float32)
    header = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    r = client.post("/v2/models/pictures/infer", data=header + x.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 200, r.json
    assert client.get("/v2/models/typed/config").json["max_batch_size"] == 64  # BYTES rows: the row limit
