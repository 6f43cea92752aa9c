"""Model control as every client sees it: once the text generator is unloaded (Triton's unload), each protocol
says so with its own status, naming the model; loaded back, each answers again. Real clients where there is one:
tritonclient (HTTP and gRPC), tensorflow-serving-api's stub, openai; curl-like requests for the REST APIs."""
from __future__ import annotations

import grpc
import numpy as np
import openai
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc as tf_serving
from tritonclient.utils import InferenceServerException

PROMPT = "ROMEO:\n"


def calls(stack):
    """protocol -> a call that returns its answer or raises with what the client reports."""
    import tensorflow as tf
    oa = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    v2 = grpcclient.InferenceServerClient(f"127.0.0.1:{stack.grpc_v2_port}")
    channel = grpc.insecure_channel(f"127.0.0.1:{stack.grpc_tfs_port}")

    def http(path, body):
        r = requests.post(stack.url + path, json=body, timeout=60)
        if r.status_code != 200:
            raise requests.HTTPError(r.status_code, r.json())
        return r.json()

    def v2_grpc():
        x = grpcclient.InferInput("prompt", [1], "BYTES")
        x.set_data_from_numpy(np.array([PROMPT.encode()], dtype=object))
        return v2.infer("textgen", [x], parameters={"max_tokens": 5, "seed": 1}).as_numpy("text")

    def tfs_grpc():
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "textgen"
        req.inputs["prompt"].CopyFrom(tf.make_tensor_proto([PROMPT]))
        return tf_serving.PredictionServiceStub(channel).Predict(req, timeout=60)

    return {
        "native": lambda: http("/api/generate", {"prompt": PROMPT, "max_tokens": 5, "seed": 1}),
        "tfs-rest": lambda: http("/v1/models/textgen:predict", {"instances": [PROMPT]}),
        "v2-http": lambda: http("/v2/models/textgen/infer", {"inputs": [
            {"name": "prompt", "datatype": "BYTES", "shape": [1], "data": [PROMPT]}], "parameters": {"max_tokens": 5}}),
        "v2-grpc": v2_grpc,
        "tfs-grpc": tfs_grpc,
        "openai": lambda: oa.completions.create(model="textgen", prompt=PROMPT, max_tokens=5, seed=1),
    }, channel


def refusal(call) -> tuple[object, str]:
    """-> (the status the client reports, its message) of a call that must fail."""
    try:
        call()
    except requests.HTTPError as e:
        return e.args[0], e.args[1]["error"]
    except InferenceServerException as e:
        return e.status(), e.message()
    except grpc.RpcError as e:
        return e.code(), e.details()
    except openai.APIStatusError as e:
        return e.status_code, e.message
    pytest.fail("the call answered although the model is unloaded")


def test_unload_then_infer_on_every_protocol_and_load_back(stack):
    control = httpclient.InferenceServerClient(stack.url.removeprefix("http://"))
    protocols, channel = calls(stack)
    expected = {"native": 503, "tfs-rest": 503, "v2-http": 503, "v2-grpc": "StatusCode.UNAVAILABLE",
                "tfs-grpc": grpc.StatusCode.UNAVAILABLE, "openai": 503}
    try:
        for call in protocols.values():
            call()  # loaded: every protocol answers
        control.unload_model("textgen")
        got = {name: refusal(call) for name, call in protocols.items()}
        assert {name: status for name, (status, _) in got.items()} == expected
        for name, (_, message) in got.items():
            assert "'textgen'" in message and "unloaded" in message, (name, message)
    finally:
        control.load_model("textgen")
    assert control.is_model_ready("textgen")
    for name, call in protocols.items():
        assert call(), name
    channel.close()
