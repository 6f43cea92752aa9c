"""TF Serving's gRPC API on the gateway's host, called with tensorflow-serving-api's own stubs (PredictionService
and ModelService) against the running stack. `make test` installs that package; without it this module fails
to import, naming it."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc, predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc as tf_serving


@pytest.fixture(scope="module")
def tfs_channel(stack):
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_tfs_port}") as channel:
        yield channel



# ------------------------------------------------------------------------------- TF Serving (its own stubs)
def test_tf_serving_predict_metadata_and_status(tfs_channel, mnist_test_digits):
    import tensorflow as tf
    stub = tf_serving.PredictionServiceStub(tfs_channel)
    x, y = mnist_test_digits
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "mnist"
    req.model_spec.signature_name = "serving_default"
    req.inputs["image"].CopyFrom(tf.make_tensor_proto((x[:16] / 255.0).astype(np.float32)[..., None]))
    resp = stub.Predict(req, timeout=30)
    probs = tf.make_ndarray(resp.outputs["probabilities"])
    assert probs.shape == (16, 10) and (probs.argmax(1) == y[:16]).mean() >= 0.9
    assert resp.model_spec.name == "mnist" and resp.model_spec.version.value >= 1

    req = predict_pb2.PredictRequest()
    req.model_spec.name = "sentiment"
    req.inputs["text"].CopyFrom(tf.make_tensor_proto(["Great fun, superb acting.", "Dull and far too long."]))
    req.output_filter.append("label")
    resp = stub.Predict(req, timeout=30)
    assert list(resp.outputs) == ["label"]
    assert [v.decode() for v in tf.make_ndarray(resp.outputs["label"])] == ["positive", "negative"]

    meta_req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    meta_req.model_spec.name = "mnist"
    meta = stub.GetModelMetadata(meta_req, timeout=30)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(sigs)
    sig = sigs.signature_def["serving_default"]
    assert sig.inputs["image"].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in sig.inputs["image"].tensor_shape.dim] == [-1, 28, 28, 1]

    req = predict_pb2.PredictRequest()
    req.model_spec.name = "translation_transformer"
    req.inputs["text"].CopyFrom(tf.make_tensor_proto(["The file could not be saved."]))
    resp = stub.Predict(req, timeout=60)
    assert tf.make_ndarray(resp.outputs["translation"])[0].decode() == "Die Datei konnte nicht gespeichert werden."
    assert tf.make_ndarray(resp.outputs["score"]).dtype == np.float32

    status_req = get_model_status_pb2.GetModelStatusRequest()
    status_req.model_spec.name = "gan"
    status = model_service_pb2_grpc.ModelServiceStub(tfs_channel).GetModelStatus(status_req, timeout=30)
    versions = status.model_version_status
    assert versions and versions[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert versions[0].status.error_code == 0


def test_tf_serving_errors(tfs_channel):
    import tensorflow as tf
    stub = tf_serving.PredictionServiceStub(tfs_channel)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "nosuch"
    req.inputs["image"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28, 1), np.float32)))
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    req.model_spec.name, req.model_spec.signature_name = "mnist", "classify_x"
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "classify_x" in e.value.details()
    req.model_spec.signature_name = ""
    req.inputs["image"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28, 1), np.int64)))
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "image" in e.value.details()


def test_tf_serving_version_labels_from_the_shipped_serving_json(tfs_channel):
    """exported_models/textgen/serving.json labels version 2 'stable' and version 1 'previous': TF Serving's
    clients name them with model_spec.version_label, and the answer says which version served."""
    import tensorflow as tf
    stub = tf_serving.PredictionServiceStub(tfs_channel)
    served = {}
    for label in ("stable", "previous"):
        req = predict_pb2.PredictRequest()
        req.model_spec.name, req.model_spec.version_label = "textgen", label
        req.inputs["prompt"].CopyFrom(tf.make_tensor_proto(["ROMEO:\n"]))
        served[label] = stub.Predict(req, timeout=60).model_spec.version.value
    assert served == {"stable": 2, "previous": 1}
    status_req = get_model_status_pb2.GetModelStatusRequest()
    status_req.model_spec.name, status_req.model_spec.version_label = "textgen", "previous"
    status = model_service_pb2_grpc.ModelServiceStub(tfs_channel).GetModelStatus(status_req, timeout=30)
    assert [v.version for v in status.model_version_status] == [1]
    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.version_label = "textgen", "nightly"
    req.inputs["prompt"].CopyFrom(tf.make_tensor_proto(["ROMEO:\n"]))
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=60)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "labels: ['previous', 'stable']" in e.value.details()
