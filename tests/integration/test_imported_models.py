"""A user's own models, imported with ``python -m training import`` and copied into the running stack's
repository: a Keras functional model (two inputs, two outputs) fitted here, the same model as a SavedModel, an
onnx.helper graph of every datatype, and one with a fixed batch dimension. No source file names them: the
models service finds them, the gateway routes them, and the official clients of Triton and TF Serving get the
original model's answers."""
from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest
import requests

from modelcore.datatypes import BY_V2
from tests.imported import (
    DATATYPES,
    every_datatype,
    every_datatype_inputs,
    import_onnx,
    mlp,
    mlp_answer,
    triton_inputs,
    wait_for,
)
from training import importer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TOL = 1e-4
ROWS = 5


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    """Two inputs (an NHWC float32 image, int64 token ids), two outputs, fitted for a few steps; saved as .keras
    and exported as a SavedModel, with the samples the import checks it on."""
    import keras
    keras.utils.set_random_seed(3)
    image = keras.Input((8, 8, 1), name="image")
    tokens = keras.Input((6,), dtype="int64", name="tokens")
    seen = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    read = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(30, 4)(tokens))
    both = keras.layers.Concatenate()([seen, read])
    model = keras.Model([image, tokens], [keras.layers.Dense(3, activation="softmax", name="class_probs")(both),
                                          keras.layers.Dense(1, name="score")(both)])
    model.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    rng = np.random.default_rng(0)
    x = {"image": rng.random((64, 8, 8, 1)).astype(np.float32), "tokens": rng.integers(0, 30, (64, 6))}
    model.fit(x, [rng.integers(0, 3, 64), rng.random((64, 1))], epochs=2, batch_size=16, verbose=0)
    d = tmp_path_factory.mktemp("keras")
    model.save(d / "two.keras")
    model.export(d / "two_savedmodel", verbose=False)
    np.savez(d / "samples.npz", image=x["image"][:4], tokens=x["tokens"][:4])
    fresh = {"image": rng.random((ROWS, 8, 8, 1)).astype(np.float32), "tokens": rng.integers(0, 30, (ROWS, 6))}
    probs, score = model.predict(fresh, verbose=0)
    return {"dir": d, "inputs": fresh, "expected": {"class_probs": probs, "score": score}}


@pytest.fixture(scope="module")
def served(stack, keras_model, tmp_path_factory):
    """Imported from each source, then copied into the running stack: each answers within the poll interval."""
    work = tmp_path_factory.mktemp("imports")
    d = keras_model["dir"]
    for name, source in (("keras_two", d / "two.keras"), ("saved_two", d / "two_savedmodel")):
        assert importer.main([name, str(source), "--samples", str(d / "samples.npz"), "--out",
                              str(work / "repo")]) == 0
    import_onnx(every_datatype(), "typed", work, "--allow-fp64")
    import_onnx(every_datatype(batch=1), "fixed_one", work, "--allow-fp64")
    (work / "digits.txt").write_text("\n".join(DIGITS) + "\n")
    import_onnx(mlp(7, 16), "labelled", work, "--labels", str(work / "digits.txt"))
    (work / "colours.txt").write_text("\n".join(COLOURS) + "\n")
    import_onnx(colour_scorer(), "pictures", work, "--image-input", "image", "--labels", str(work / "colours.txt"))
    names = ["keras_two", "saved_two", "typed", "fixed_one", "labelled", "pictures"]
    for name in names:
        stack.add_model(work / "repo" / name, name)
    for name in names:
        wait_for(stack.service_url["models"], name, timeout=stack.POLL_SECONDS + 60)
    yield {"work": work, "names": names}
    for name in names:
        shutil.rmtree(stack.repository / name)
    for name in names:
        wait_for(stack.service_url["models"], name, ready=False, timeout=stack.POLL_SECONDS + 30)


DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COLOURS = ["red", "green", "blue", "grey"]
SCORER = np.array([[1, 0, 0, 0.3], [0, 1, 0, 0.3], [0, 0, 1, 0.3]], np.float32)


def colour_scorer():
    """image [N, 8, 8, 3] (RGB 0..1) -> scores [N, 4]: the mean colour, scored against red, green, blue, grey."""
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
         helper.make_node("MatMul", ["mean", "w"], ["scores"])], "colours",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 8, 8, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 4])], [numpy_helper.from_array(SCORER, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def pngs(n: int) -> tuple[list[bytes], np.ndarray]:
    """n random 8x8 RGB pictures as PNG files, and the scores the model gives them."""
    import io

    from PIL import Image
    pixels = np.random.default_rng(5).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    files = []
    for p in pixels:
        buf = io.BytesIO()
        Image.fromarray(p, "RGB").save(buf, "PNG")
        files.append(buf.getvalue())
    return files, (pixels / 255.0).astype(np.float32).mean(axis=(1, 2)) @ SCORER


def close(got: dict, expected: dict) -> None:
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, atol=TOL, err_msg=name)


def test_keras_model_answers_as_keras_on_triton_and_tf_serving_clients(stack, served, keras_model):
    import grpc
    import tensorflow as tf
    import tritonclient.grpc as tg
    import tritonclient.http as th
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    x, expected = keras_model["inputs"], keras_model["expected"]
    host = stack.url.removeprefix("http://")
    http = th.InferenceServerClient(host)
    inputs = triton_inputs(th, x)  # binary tensors, tritonclient's default
    r = http.infer("keras_two", inputs, outputs=[th.InferRequestedOutput(n) for n in expected])
    close({n: r.as_numpy(n) for n in expected}, expected)
    only = http.infer("keras_two", inputs, outputs=[th.InferRequestedOutput("score")])  # output selection
    assert [o["name"] for o in only.get_response()["outputs"]] == ["score"]

    rpc = tg.InferenceServerClient(f"127.0.0.1:{stack.grpc_v2_port}")
    r = rpc.infer("keras_two", triton_inputs(tg, x))
    close({n: r.as_numpy(n) for n in expected}, expected)

    rows = requests.post(stack.url + "/v1/models/keras_two:predict", timeout=30, json={"instances": [
        {"image": x["image"][i].tolist(), "tokens": x["tokens"][i].tolist()} for i in range(ROWS)]})
    assert rows.status_code == 200, rows.text
    close({n: np.array([p[n] for p in rows.json()["predictions"]]) for n in expected}, expected)
    columns = requests.post(stack.url + "/v1/models/keras_two:predict", timeout=30, json={
        "inputs": {"image": x["image"].tolist(), "tokens": x["tokens"].tolist()}})
    close({n: np.array(v) for n, v in columns.json()["outputs"].items()}, expected)

    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_tfs_port}") as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "keras_two"
        for name, value in x.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    close({n: tf.make_ndarray(t) for n, t in answer.outputs.items()}, expected)
    assert answer.model_spec.version.value == 1


def test_the_savedmodel_source_answers_the_same(stack, served, keras_model):
    import tritonclient.http as th
    x, expected = keras_model["inputs"], keras_model["expected"]
    client = th.InferenceServerClient(stack.url.removeprefix("http://"))
    meta = client.get_model_metadata("saved_two")
    assert sorted(t["name"] for t in meta["inputs"]) == ["image", "tokens"]
    r = client.infer("saved_two", triton_inputs(th, x, binary=False))  # JSON this time
    # a Keras SavedModel names its outputs output_0, output_1 in the order of the model's outputs
    close({"class_probs": r.as_numpy("output_0"), "score": r.as_numpy("output_1")}, expected)


def test_metadata_config_status_and_statistics_on_every_api(stack, served):
    import grpc
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc as tfs

    meta = requests.get(stack.url + "/v2/models/keras_two", timeout=10).json()
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 1]},
                              {"name": "tokens", "datatype": "INT64", "shape": [-1, 6]}]
    assert meta["parameters"]["task"] == "generic"
    config = requests.get(stack.url + "/v2/models/keras_two/config", timeout=10).json()
    assert config["max_batch_size"] > 0 and config["input"][0]["dims"] == [8, 8, 1]
    fixed = requests.get(stack.url + "/v2/models/fixed_one/config", timeout=10).json()
    assert fixed["max_batch_size"] == 0 and fixed["input"][0]["dims"] == [1, 2]  # Triton: dims then hold the batch
    assert "dynamic_batching" not in fixed and config["dynamic_batching"]["preferred_batch_size"] == [64]
    v1 = requests.get(stack.url + "/v1/models/keras_two/metadata", timeout=10).json()
    assert set(v1["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]) == {"image", "tokens"}
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_tfs_port}") as channel:
        ask = get_model_metadata_pb2.GetModelMetadataRequest()
        ask.model_spec.name = "keras_two"
        ask.metadata_field.append("signature_def")
        assert tfs.PredictionServiceStub(channel).GetModelMetadata(ask, timeout=10).model_spec.version.value == 1
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "keras_two"
        got = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=10)
        assert [(s.version, s.state) for s in got.model_version_status] == [(1, 30)]  # 30: AVAILABLE
    index = requests.post(stack.url + "/v2/repository/index", json={}, timeout=10).json()
    assert {"name": "typed", "version": "1", "state": "READY", "reason": ""} in index
    models = {m["name"]: m for m in requests.get(stack.url + "/api/models", timeout=10).json()["models"]}
    assert models["keras_two"]["service"] == "models" and models["keras_two"]["parity"]["max_abs_diff"] <= TOL


def test_every_datatype_round_trips_binary_and_json(stack, served):
    import tritonclient.grpc as tg
    import tritonclient.http as th
    x = every_datatype_inputs(3)
    for binary in (True, False):
        client = th.InferenceServerClient(stack.url.removeprefix("http://"))
        r = client.infer("typed", triton_inputs(th, x, binary),
                         outputs=[th.InferRequestedOutput(f"{n}_out", binary_data=binary) for n, *_ in DATATYPES])
        for name, _, datatype, _ in DATATYPES:
            got = r.as_numpy(f"{name}_out")
            if datatype == "BYTES":
                got = np.array([v if isinstance(v, bytes) else v.encode() for v in got.reshape(-1)],
                               dtype=object).reshape(got.shape)
            np.testing.assert_array_equal(got, x[name], err_msg=f"{name} binary={binary}")
    rpc = tg.InferenceServerClient(f"127.0.0.1:{stack.grpc_v2_port}")
    np.testing.assert_array_equal(rpc.infer("typed", triton_inputs(tg, x)).as_numpy("bytes_out"), x["bytes"])


def test_every_datatype_on_every_protocols_metadata_and_inference(stack, served):
    """Each datatype of modelcore.datatypes, named right in v2 metadata and config, TF Serving REST and gRPC
    metadata, v2 gRPC metadata, and answered right by TF Serving REST, TF Serving gRPC and v2 gRPC (all outputs)."""
    import grpc
    import tensorflow as tf
    import tritonclient.grpc as tg
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc as tfs

    by_name = {name: BY_V2[datatype] for name, _, datatype, _ in DATATYPES}
    meta = requests.get(stack.url + "/v2/models/typed", timeout=10).json()
    assert {t["name"]: t["datatype"] for t in meta["inputs"]} == {n: d.v2 for n, d in by_name.items()}
    config = requests.get(stack.url + "/v2/models/typed/config", timeout=10).json()
    assert {t["name"]: t["data_type"] for t in config["input"]} == {n: d.triton for n, d in by_name.items()}
    v1 = requests.get(stack.url + "/v1/models/typed/metadata", timeout=10).json()
    signature = v1["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert {n: t["dtype"] for n, t in signature["inputs"].items()} == {n: d.tf_enum for n, d in by_name.items()}
    rpc = tg.InferenceServerClient(f"127.0.0.1:{stack.grpc_v2_port}")
    grpc_meta = rpc.get_model_metadata("typed")
    assert {t.name: t.datatype for t in grpc_meta.outputs} == {f"{n}_out": d.v2 for n, d in by_name.items()}

    x = every_datatype_inputs(2)
    got = rpc.infer("typed", triton_inputs(tg, x))
    for name in by_name:
        np.testing.assert_array_equal(got.as_numpy(f"{name}_out"), x[name], err_msg=f"v2 gRPC {name}")
    instances = [{n: [v.decode() if isinstance(v, bytes) else v.item() for v in x[n][i]] for n in x} for i in range(2)]
    r = requests.post(stack.url + "/v1/models/typed:predict", json={"instances": instances}, timeout=10)
    assert r.status_code == 200, r.text
    for i, row in enumerate(r.json()["predictions"]):
        for name, d in by_name.items():
            want = [v.decode() for v in x[name][i]] if d.v2 == "BYTES" else x[name][i].tolist()
            assert row[f"{name}_out"] == want, f"TF Serving REST {name}"
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_tfs_port}") as channel:
        stub = tfs.PredictionServiceStub(channel)
        ask = get_model_metadata_pb2.GetModelMetadataRequest()
        ask.model_spec.name = "typed"
        ask.metadata_field.append("signature_def")
        sigs = get_model_metadata_pb2.SignatureDefMap()
        stub.GetModelMetadata(ask, timeout=10).metadata["signature_def"].Unpack(sigs)
        inputs = sigs.signature_def["serving_default"].inputs
        assert {n: tf.dtypes.as_dtype(t.dtype).name for n, t in inputs.items()} == \
            {n: d.manifest for n, d in by_name.items()}
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "typed"
        for name, arr in x.items():
            req.inputs[name].CopyFrom(tf.make_tensor_proto(arr))
        answer = stub.Predict(req, timeout=10)
        for name in by_name:
            np.testing.assert_array_equal(tf.make_ndarray(answer.outputs[f"{name}_out"]), x[name],
                                          err_msg=f"TF Serving gRPC {name}")


def test_concurrent_requests_are_batched(stack, served, keras_model):
    x = keras_model["inputs"]
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 8, 8, 1],
                        "data": x["image"][0].reshape(-1).tolist()},
                       {"name": "tokens", "datatype": "INT64", "shape": [1, 6], "data": x["tokens"][0].tolist()}]}
    errors = []

    def client():
        with requests.Session() as s:
            for _ in range(15):
                r = s.post(stack.url + "/v2/models/keras_two/infer", json=body, timeout=30)
                if r.status_code != 200:
                    errors.append(r.text)
    threads = [threading.Thread(target=client) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    stats = requests.get(stack.url + "/v2/models/keras_two/stats", timeout=10).json()["model_stats"][0]
    sizes = {b["batch_size"] for b in stats["batch_stats"]}
    assert max(sizes) > 1, stats["batch_stats"]
    assert stats["inference_stats"]["success"]["count"] >= 24 * 15
    text = requests.get(stack.service_url["models"] + "/metrics", timeout=10).text
    assert 'model_requests_total{model="keras_two"' in text.replace(", ", ",")


def test_a_fixed_batch_dimension_serves_exactly_that_batch(stack, served):
    import tritonclient.http as th
    x = every_datatype_inputs(2)
    client = th.InferenceServerClient(stack.url.removeprefix("http://"))

    def call(rows):
        return client.infer("fixed_one", triton_inputs(th, {k: v[:rows] for k, v in x.items()}))
    assert call(1).as_numpy("int64_out").tolist() == x["int64"][:1].tolist()
    from tritonclient.utils import InferenceServerException
    with pytest.raises(InferenceServerException, match="takes exactly 1") as err:
        call(2)
    assert err.value.status() == "400"


def test_unload_load_keys_and_deadlines_through_the_gateway(stack, served, gateway):
    import tritonclient.grpc as tg
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException
    x = every_datatype_inputs(1)
    control = th.InferenceServerClient(stack.url.removeprefix("http://"))

    control.unload_model("typed")
    try:
        with pytest.raises(InferenceServerException, match="unloaded") as err:
            control.infer("typed", triton_inputs(th, x))
        assert err.value.status() == "503"
    finally:
        control.load_model("typed")
    assert control.infer("typed", triton_inputs(th, x)).as_numpy("fp32_out").tolist() == x["fp32"].tolist()
    # a gRPC deadline reaches the model as v2's timeout: one already spent is refused before any compute
    rpc = tg.InferenceServerClient(f"127.0.0.1:{stack.grpc_v2_port}")
    with pytest.raises(InferenceServerException, match="deadline") as err:
        rpc.infer("typed", triton_inputs(tg, x), timeout=1)  # the server-side timeout in microseconds, as Triton has
    assert err.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    keyed = gateway(GATEWAY_API_KEYS="key-1", GATEWAY_RATE_LIMIT="2/minute", MAX_BODY_BYTES="4096")
    body = requests.get(stack.url + "/api/models", timeout=10).json()
    example = next(m["example"] for m in body["models"] if m["name"] == "typed")
    assert keyed.post("/v2/models/typed/infer", json=example).status_code == 401
    bearer = {"Authorization": "Bearer key-1"}
    assert keyed.post("/v2/models/typed/infer", json=example, headers=bearer).status_code == 200
    big = keyed.post("/v2/models/typed/infer", data=b"{" + b" " * 5000 + b"}", headers=bearer)
    assert big.status_code == 413
    codes = [keyed.post("/v2/models/typed/infer", json=example, headers=bearer).status_code for _ in range(2)]
    assert codes == [200, 429]  # two a minute: the refused calls above did not count


def test_openapi_shows_each_imported_model_with_a_working_example(stack, served):
    spec = requests.get(stack.url + "/openapi.json", timeout=10).json()
    op = spec["paths"]["/v2/models/keras_two/infer"]["post"]
    assert "image FP32 [-1, 8, 8, 1]" in op["summary"] and op["tags"] == ["imported"]
    example = op["requestBody"]["content"]["application/json"]["example"]
    r = requests.post(stack.url + "/v2/models/keras_two/infer", json=example, timeout=30)
    assert r.status_code == 200 and [o["name"] for o in r.json()["outputs"]] == ["class_probs", "score"]
    assert "keras_two" in spec["paths"]["/v2/models/{name}"]["get"]["parameters"][0]["schema"]["enum"]


def test_a_model_copied_in_answers_within_the_poll_and_leaves_when_removed(stack, served, tmp_path):
    stack.add_model(import_onnx(every_datatype(), "late_arrival", tmp_path, "--allow-fp64"), "late_arrival")
    try:
        took = wait_for(stack.service_url["models"], "late_arrival", timeout=stack.POLL_SECONDS + 30)
        assert took < stack.POLL_SECONDS + 10, took
        body = requests.get(stack.url + "/api/models", timeout=10).json()
        example = next(m["example"] for m in body["models"] if m["name"] == "late_arrival")
        assert requests.post(stack.url + "/v2/models/late_arrival/infer", json=example, timeout=30).status_code == 200
    finally:
        shutil.rmtree(stack.repository / "late_arrival")
    wait_for(stack.service_url["models"], "late_arrival", ready=False, timeout=stack.POLL_SECONDS + 30)
    index = requests.post(stack.url + "/v2/repository/index", json={}, timeout=10).json()
    assert "late_arrival" not in {m["name"] for m in index}


def test_a_corrupted_model_is_refused_and_the_others_keep_serving(stack, served, keras_model):
    corrupt = stack.repository / ".corrupt"
    shutil.copytree(served["work"] / "repo" / "keras_two", corrupt)
    graph = corrupt / "1" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-64] + b"\0" * 64)
    corrupt.rename(stack.repository / "corrupt")
    try:
        for _ in range(100):
            index = requests.post(stack.url + "/v2/repository/index", json={}, timeout=10).json()
            entry = next((m for m in index if m["name"] == "corrupt"), None)
            if entry:
                break
            threading.Event().wait(0.2)
        assert entry["state"] == "UNLOADED" and entry["reason"] == "loads on its next request", entry
        # each worker checks it as it loads, on its first request there: one connection to the models service
        # keeps both calls on one worker, so its index shows what its load found
        with requests.Session() as worker:
            for _ in range(100):  # this worker polls the repository on its own: until it has seen the model
                r = worker.post(stack.service_url["models"] + "/v2/models/corrupt/infer", json={"inputs": []},
                                timeout=10)
                if r.status_code != 404:
                    break
                threading.Event().wait(0.2)
            assert r.status_code == 503 and "sha256" in r.json()["error"], r.text
            index = worker.post(stack.service_url["models"] + "/v2/repository/index", json={}, timeout=10).json()
        entry = next(m for m in index if m["name"] == "corrupt")
        assert entry["state"] == "UNAVAILABLE" and "sha256" in entry["reason"], entry
        for _ in range(100):  # through the gateway too, once the worker behind it has seen the model
            r = requests.post(stack.url + "/v2/models/corrupt/infer", json={"inputs": []}, timeout=10)
            if r.status_code != 404:
                break
            threading.Event().wait(0.2)
        assert r.status_code == 503 and "sha256" in r.json()["error"], r.text
        assert requests.get(stack.url + "/v2/health/ready", timeout=10).status_code == 200
        x = keras_model["inputs"]
        good = requests.post(stack.url + "/v1/models/keras_two:predict", timeout=30, json={
            "inputs": {"image": x["image"].tolist(), "tokens": x["tokens"].tolist()}})
        assert good.status_code == 200
    finally:
        shutil.rmtree(stack.repository / "corrupt")


def test_classification_returns_the_top_labels_on_triton_clients_and_json(stack, served):
    """Triton's classification extension on a model imported with --labels: tritonclient's class_count, over HTTP
    (binary) and gRPC, and v2 JSON; "score:index:label" strings, highest first, as the scores say."""
    import tritonclient.grpc as tg
    import tritonclient.http as th
    x = np.random.default_rng(2).standard_normal((3, 784)).astype(np.float32)
    scores = mlp_answer(7, x, 16)
    top = np.argsort(-scores, axis=1)[:, :3]

    def check(strings, k):  # "score:index:label": the index and label exact, the score within the tolerance
        got = [[v.decode() if isinstance(v, bytes) else v for v in row] for row in strings]
        assert [[s.split(":", 2)[1:] for s in row] for row in got] == \
            [[[str(i), DIGITS[i]] for i in row[:k]] for row in top], got
        np.testing.assert_allclose([[float(s.split(":")[0]) for s in row] for row in got],
                                   np.take_along_axis(scores, top[:, :k], axis=1), atol=TOL)
    host = stack.url.removeprefix("http://")
    for lib, client in ((th, th.InferenceServerClient(host)), (tg, tg.InferenceServerClient(
            f"127.0.0.1:{stack.grpc_v2_port}"))):
        inp = lib.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        r = client.infer("labelled", [inp], outputs=[lib.InferRequestedOutput("y", class_count=3)])
        got = r.as_numpy("y")
        assert got.shape == (3, 3), (lib.__name__, got)
        check(got, 3)
    config = requests.get(stack.url + "/v2/models/labelled/config", timeout=10).json()
    assert config["output"][0]["label_filename"] == "labels.txt", config
    body = {"inputs": [{"name": "x", "shape": [3, 784], "datatype": "FP32", "data": x.reshape(-1).tolist()}],
            "outputs": [{"name": "y", "parameters": {"classification": 2}}]}
    r = requests.post(stack.url + "/v2/models/labelled/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [3, 2]
    check(np.array(out["data"], dtype=object).reshape(3, 2), 2)
    for params, why in (({"classification": 0}, "1 or more"), ({"shared_memory_region": "r"}, "unknown parameter")):
        r = requests.post(stack.url + "/v2/models/labelled/infer", timeout=30, json={
            **body, "outputs": [{"name": "y", "parameters": params}]})
        assert r.status_code == 400 and why in r.json()["error"] and r.json()["field"] == "outputs", r.text


def test_tf_serving_classify_gives_every_label_with_its_score(stack, served):
    """TF Serving's :classify on the labelled model: examples of features (a flat list each, as a tf.Example
    holds them) -> each example's [label, score] for every class, in the output's order."""
    x = np.random.default_rng(4).standard_normal((2, 784)).astype(np.float32)
    r = requests.post(stack.url + "/v1/models/labelled:classify", timeout=30,
                      json={"examples": [{"x": row.tolist()} for row in x]})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert [[pair[0] for pair in ex] for ex in result] == [DIGITS, DIGITS]
    np.testing.assert_allclose([[pair[1] for pair in ex] for ex in result], mlp_answer(7, x, 16), atol=TOL)
    for url, body, why in (
            ("keras_two:classify", {"examples": [{"image": [0.0]}]}, "has no labels to classify with: import it "
                                                                     "with --labels FILE"),
            ("labelled:classify", {"examples": [{"x": x[0].tolist()}], "inputs": []}, "unknown field(s) ['inputs']"),
            ("labelled:classify", {"examples": [{}]}, "example 0 has no feature 'x'"),
            ("labelled:regress", {"examples": [{}]}, "unknown action 'regress'")):
        r = requests.post(f"{stack.url}/v1/models/{url}", json=body, timeout=30)
        assert 400 <= r.status_code < 500 and why in r.json()["error"], r.text


def test_an_image_model_takes_png_files_on_triton_and_tf_serving_clients(stack, served):
    """A model imported with --image-input takes encoded images: a v2 BYTES tensor (tritonclient, HTTP and gRPC)
    and TF Serving's {"b64": ...}; each is decoded, resized and scaled to its input, and answers as the pixels
    would; its labels come with class_count."""
    import base64

    import tritonclient.grpc as tg
    import tritonclient.http as th
    files, want = pngs(3)
    host = stack.url.removeprefix("http://")
    for lib, client in ((th, th.InferenceServerClient(host)), (tg, tg.InferenceServerClient(
            f"127.0.0.1:{stack.grpc_v2_port}"))):
        inp = lib.InferInput("image", [3], "BYTES")
        inp.set_data_from_numpy(np.array(files, dtype=object))
        r = client.infer("pictures", [inp], outputs=[lib.InferRequestedOutput("scores")])
        np.testing.assert_allclose(r.as_numpy("scores"), want, atol=TOL, err_msg=lib.__name__)
        top = client.infer("pictures", [inp], outputs=[lib.InferRequestedOutput("scores", class_count=1)])
        assert [v[0].decode().split(":")[2] for v in top.as_numpy("scores")] == \
            [COLOURS[i] for i in want.argmax(axis=1)]
    r = requests.post(stack.url + "/v1/models/pictures:predict", timeout=30, json={
        "instances": [{"b64": base64.b64encode(f).decode()} for f in files]})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], want, atol=TOL)
    r = requests.post(stack.url + "/v1/models/pictures:predict", timeout=30, json={
        "instances": [{"b64": base64.b64encode(b"not an image").decode()}]})
    assert r.status_code == 400 and "is not a readable PNG, JPEG or WebP image" in r.json()["error"], r.text


def test_an_image_model_takes_the_files_themselves_as_a_body_or_an_upload(stack, served):
    """As BentoML and KServe users send pictures: the body as one image, or a form upload of several (a batch);
    v2's JSON answers, with the top labels for ?classification=K. What cannot be served is a 4xx that says why."""
    files, want = pngs(3)
    url = stack.url + "/v2/models/pictures/infer"
    r = requests.post(url, data=files[0], headers={"Content-Type": "image/png"}, timeout=30)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}["scores"]
    np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), want[:1], atol=TOL)
    r = requests.post(url + "?classification=2", files=[("image", (f"p{i}.png", f, "image/png"))
                                                         for i, f in enumerate(files)], timeout=30)
    assert r.status_code == 200, r.text
    top = {o["name"]: o for o in r.json()["outputs"]}["scores"]
    assert top["shape"] == [3, 2] and [row.split(":")[2] for row in top["data"][::2]] == \
        [COLOURS[i] for i in want.argmax(axis=1)]
    refused = [
        (requests.post(url, data=b"GIF89a not really", headers={"Content-Type": "image/gif"}, timeout=30),
         415, "Content-Type"),
        (requests.post(url, files=[("picture", ("p.png", files[0], "image/png"))], timeout=30), 400, "picture"),
        (requests.post(url, data=b"not an image", headers={"Content-Type": "image/png"}, timeout=30), 400, "image"),
        (requests.post(stack.url + "/v2/models/labelled/infer", data=files[0], headers={"Content-Type": "image/png"},
                       timeout=30), 415, "Content-Type"),
    ]
    for r, status, field in refused:
        assert r.status_code == status and r.json()["field"] == field, r.text


REVIEWS = ["A fine film, a FINE film!", "bad\tbad ending", "words it never saw", ""]


@pytest.fixture(scope="module")
def text_model(stack, tmp_path_factory):
    """Keras's text tutorial in small: a TextVectorization adapted here inside the model, imported in a fresh
    process (as users run it; this one holds TensorFlow) and served from the running stack."""
    import subprocess
    import sys

    import keras
    import tensorflow as tf

    from tests.conftest import ROOT
    keras.utils.set_random_seed(4)
    vectorize = keras.layers.TextVectorization(max_tokens=30, output_sequence_length=6)
    vectorize.adapt(["a fine film", "a bad ending", "fine acting, bad plot", "the end"])
    review = keras.Input((1,), dtype="string", name="review")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(30, 4)(vectorize(review)))
    model = keras.Model(review, keras.layers.Dense(1, activation="sigmoid", name="positive")(pooled))
    d = tmp_path_factory.mktemp("text")
    model.save(d / "reviews.keras")
    np.savez(d / "samples.npz", review=np.array([[t] for t in REVIEWS]))
    proc = subprocess.run([sys.executable, "-m", "training", "import", "reviews", str(d / "reviews.keras"),
                           "--samples", str(d / "samples.npz"), "--out", str(d / "repo")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    stack.add_model(d / "repo" / "reviews", "reviews")
    wait_for(stack.service_url["models"], "reviews", timeout=stack.POLL_SECONDS + 60)
    yield model(tf.constant([[t] for t in REVIEWS])).numpy()
    shutil.rmtree(stack.repository / "reviews")
    wait_for(stack.service_url["models"], "reviews", ready=False, timeout=stack.POLL_SECONDS + 30)


def test_a_model_with_textvectorization_takes_strings_on_every_protocol(stack, text_model):
    import tritonclient.grpc as tg
    import tritonclient.http as th
    texts = np.array([[t.encode()] for t in REVIEWS], dtype=object)
    http = th.InferenceServerClient(stack.url.removeprefix("http://"))
    np.testing.assert_allclose(http.infer("reviews", triton_inputs(th, {"review": texts})).as_numpy("positive"),
                               text_model, atol=TOL)
    rpc = tg.InferenceServerClient(f"127.0.0.1:{stack.grpc_v2_port}")
    np.testing.assert_allclose(rpc.infer("reviews", triton_inputs(tg, {"review": texts})).as_numpy("positive"),
                               text_model, atol=TOL)
    r = requests.post(f"{stack.url}/v1/models/reviews:predict", json={"instances": [[t] for t in REVIEWS]},
                      timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["predictions"]), text_model, atol=TOL)
