"""gRPC on the gateway's host, with the official client unchanged: tritonclient.grpc (Open Inference Protocol
v2, Triton's GRPCInferenceService) against the running stack; and the HTTP gateway's protections (API key, rate
limit, size limit) on a second gateway with those settings. TF Serving's stubs: test_grpc_tfs.py."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ROOT, free_port_block


@pytest.fixture(scope="module")
def triton(stack):
    return grpcclient.InferenceServerClient(f"127.0.0.1:{stack.grpc_v2_port}")


def image_input(x: np.ndarray):
    inp = grpcclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def text_input(name: str, texts: list[str]):
    inp = grpcclient.InferInput(name, [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    return inp


# ------------------------------------------------------------------------------------------- v2 (tritonclient)
def test_v2_health_metadata_and_config(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("mnist") and not triton.is_model_ready("mnist", "999")
    meta = triton.get_server_metadata()
    assert {"model_repository", "statistics"} <= set(meta.extensions)
    m = triton.get_model_metadata("mnist")
    assert m.inputs[0].name == "image" and list(m.inputs[0].shape) == [-1, 28, 28, 1] and m.platform
    cfg = triton.get_model_config("sentiment").config
    assert cfg.input[0].name == "text" and cfg.max_batch_size > 0


def test_v2_infer_real_digits_and_text(triton, mnist_test_digits):
    x, y = mnist_test_digits
    batch = (x[:32] / 255.0).astype(np.float32)[..., None]
    res = triton.infer("mnist", [image_input(batch)], outputs=[grpcclient.InferRequestedOutput("probabilities")])
    probs = res.as_numpy("probabilities")
    assert probs.shape == (32, 10) and (probs.argmax(1) == y[:32]).mean() >= 0.9
    assert res.get_response().model_version

    res = triton.infer("sentiment", [text_input("text", ["A wonderful, moving film. I loved it.",
                                                          "Terrible, boring and far too long."])])
    assert [v.decode() for v in res.as_numpy("label")] == ["positive", "negative"]
    res = triton.infer("translation_transformer", [text_input("text", ["The file could not be saved."])],
                       parameters={"beam_size": 4})
    assert res.as_numpy("translation")[0].decode() == "Die Datei konnte nicht gespeichert werden."
    one = triton.infer("textgen", [text_input("prompt", ["ROMEO:\n"])], parameters={"max_tokens": 30, "seed": 3})
    two = triton.infer("textgen", [text_input("prompt", ["ROMEO:\n"])], parameters={"max_tokens": 30, "seed": 3})
    assert len(one.as_numpy("text")[0].decode()) == 30 and one.as_numpy("text")[0] == two.as_numpy("text")[0]


SIX_MODELS = {  # model -> (inputs as (name, datatype, array), parameters)
    "mnist": ([("image", "FP32", np.linspace(0, 1, 2 * 784, dtype=np.float32).reshape(2, 28, 28, 1))], {}),
    "sentiment": ([("text", "BYTES", np.array([b"A moving, beautifully acted film.", b"Dull."], dtype=object))], {}),
    "translation_transformer": ([("text", "BYTES", np.array([b"Where is the station?"], dtype=object))],
                                {"beam_size": 4}),
    "translation_seq2seq": ([("text", "BYTES", np.array([b"Good morning."], dtype=object))], {"beam_size": 2}),
    "textgen": ([("prompt", "BYTES", np.array([b"ROMEO:\n", b"JULIET:"], dtype=object))],
                {"max_tokens": 40, "seed": 9, "temperature": 0.8}),
    "gan": ([("latent", "FP32", np.random.default_rng(3).standard_normal((2, 100)).astype(np.float32))], {}),
}


@pytest.mark.parametrize("model", list(SIX_MODELS))
def test_grpc_and_http_give_the_same_answers(stack, triton, model):
    """tritonclient.grpc and tritonclient.http, the same inputs: the same outputs, on every model."""
    import tritonclient.http as httpclient
    http = httpclient.InferenceServerClient(stack.url.replace("http://", ""), network_timeout=60)
    tensors, params = SIX_MODELS[model]
    results = []
    for client, lib in ((triton, grpcclient), (http, httpclient)):
        inputs = []
        for name, datatype, arr in tensors:
            inp = lib.InferInput(name, list(arr.shape), datatype)
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        results.append(client.infer(model, inputs, parameters=params))
    names = [o["name"] for o in http.get_model_metadata(model)["outputs"]]
    for name in names:
        a, b = results[0].as_numpy(name), results[1].as_numpy(name)
        assert a is not None and a.shape == b.shape
        if a.dtype == object:
            assert list(a.ravel()) == list(b.ravel())
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_v2_errors_carry_the_http_message_and_the_right_code(triton):
    with pytest.raises(InferenceServerException) as e:
        triton.infer("nosuch", [image_input(np.zeros((1, 28, 28, 1), np.float32))])
    assert e.value.status() == "StatusCode.NOT_FOUND" and "neither a shipped nor an imported model" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        triton.infer("mnist", [image_input(np.zeros((1, 5), np.float32))])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "image" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        triton.infer("translation_transformer", [text_input("text", ["Hello."])], parameters={"beam_size": 99})
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "beam_size" in e.value.message()
    with pytest.raises(InferenceServerException) as e:  # the deadline passes while the text is generated
        triton.infer("textgen", [text_input("prompt", ["ROMEO:\n"])], parameters={"max_tokens": 1000},
                     client_timeout=0.05)
    assert e.value.status() == "StatusCode.DEADLINE_EXCEEDED"


def test_a_server_side_deadline_comes_back_as_the_servers_deadline_exceeded(triton):
    """v2's ``timeout`` (microseconds) far shorter than the client's own: the service gives up, and the status
    carries its message, not the client library's."""
    t0 = time.perf_counter()
    with pytest.raises(InferenceServerException) as e:  # 64 x 1,000 tokens: seconds of decoding, not 100 ms
        triton.infer("textgen", [text_input("prompt", ["ROMEO:\n"] * 64)], parameters={"max_tokens": 1000},
                     timeout=100_000, client_timeout=60)
    assert e.value.status() == "StatusCode.DEADLINE_EXCEEDED", e.value
    assert "deadline passed before decoding finished" in e.value.message(), e.value.message()
    assert time.perf_counter() - t0 < 30  # long before the client's own 60 s


def test_v2_repository_statistics_and_model_control(triton):
    z = grpcclient.InferInput("latent", [2, 100], "FP32")
    z.set_data_from_numpy(np.zeros((2, 100), np.float32))
    triton.infer("gan", [z])
    stats = triton.get_inference_statistics("gan").model_stats
    assert stats[0].inference_stats.success.count >= 1 and stats[0].batch_stats
    index = {(m.name, m.state) for m in triton.get_model_repository_index().models}
    assert ("mnist", "READY") in index
    triton.unload_model("gan")
    try:
        assert not triton.is_model_ready("gan")
        with pytest.raises(InferenceServerException, match="unloaded"):
            triton.infer("gan", [z])
    finally:
        triton.load_model("gan")
    assert triton.is_model_ready("gan") and triton.infer("gan", [z]).as_numpy("image").shape == (2, 28, 28, 1)


# ----------------------------------------------------------------- the gateway's checks, on a gateway with them
@pytest.fixture(scope="module")
def guarded(stack):
    """A second gateway on the stack's services, with an API key, a rate limit and a small body limit."""
    base = free_port_block(3)
    env = {**os.environ, "GATEWAY_PORT": str(base), "GRPC_TFS_PORT": str(base + 1), "GRPC_V2_PORT": str(base + 2),
           "HOST": "127.0.0.1", "GATEWAY_API_KEYS": "k-1,k-2", "GATEWAY_RATE_LIMIT": "8/minute",
           "MAX_BODY_BYTES": "100000",
           **{f"BACKEND_{n.upper()}_URL": u for n, u in stack.service_url.items()},
           "BACKEND_GAN_URL": f"http://127.0.0.1:{free_port_block(1)}"}  # a backend that is down
    proc = subprocess.Popen([sys.executable, "-m", "services", "gateway"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{base + 2}")
    deadline = time.time() + 60
    while True:
        try:
            if client.is_server_live():
                break
        except InferenceServerException:
            assert time.time() < deadline and proc.poll() is None, "guarded gateway did not start"
            time.sleep(0.3)
    client.address = f"127.0.0.1:{base + 2}"  # for raw stubs
    yield client
    proc.terminate()
    proc.wait(30)


def test_grpc_goes_through_the_gateways_checks(guarded):
    x = image_input(np.zeros((1, 28, 28, 1), np.float32))
    with pytest.raises(InferenceServerException) as e:
        guarded.infer("mnist", [x])
    assert e.value.status() == "StatusCode.UNAUTHENTICATED" and "Bearer" in e.value.message()
    key = {"authorization": "Bearer k-1"}
    assert guarded.infer("mnist", [x], headers=key).as_numpy("probabilities").shape == (1, 10)
    with pytest.raises(InferenceServerException) as e:  # 200,000 bytes of pixels, past MAX_BODY_BYTES
        guarded.infer("mnist", [image_input(np.zeros((64, 28, 28, 1), np.float32))], headers=key)
    assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    codes = []
    for _ in range(10):
        try:
            guarded.infer("mnist", [x], headers=key)
            codes.append("OK")
        except InferenceServerException as exc:
            codes.append(exc.status())
    assert "StatusCode.RESOURCE_EXHAUSTED" in codes  # 8 a minute


def test_a_message_under_grpcs_limit_but_over_the_body_limit_once_converted_is_ours_to_refuse(guarded):
    """30,000 one-byte strings: about 90 kB as protobuf (under gRPC's 100,000-byte receive limit), about 150 kB as
    the v2 binary body the gateway checks against MAX_BODY_BYTES, so the refusal is the gateway's own 413."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    req = service_pb2.ModelInferRequest(model_name="sentiment")
    req.inputs.add(name="text", datatype="BYTES", shape=[30_000]).contents.bytes_contents.extend([b"a"] * 30_000)
    assert req.ByteSize() < 100_000
    with grpc.insecure_channel(guarded.address) as channel, pytest.raises(grpc.RpcError) as e:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            req, timeout=30, metadata=(("authorization", "Bearer k-2"),))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "is larger than 100000" in e.value.details(), e.value.details()  # gRPC's own would say "message larger"


def test_a_backend_that_is_down_is_unavailable(guarded):
    z = grpcclient.InferInput("latent", [1, 100], "FP32")
    z.set_data_from_numpy(np.zeros((1, 100), np.float32))
    with pytest.raises(InferenceServerException) as e:  # a key of its own: the rate limit counts per key
        guarded.infer("gan", [z], headers={"authorization": "Bearer k-2"})
    assert e.value.status() == "StatusCode.UNAVAILABLE" and "'gan' is unavailable" in e.value.message()


def test_v2_typed_contents(stack):
    """ModelInfer with typed InferTensorContents (fp32_contents, bytes_contents) instead of raw bytes, through
    tritonclient's own generated stub; the answer comes back as raw_output_contents."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_v2_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        req = service_pb2.ModelInferRequest(model_name="sentiment")
        t = req.inputs.add(name="text", datatype="BYTES", shape=[2])
        t.contents.bytes_contents.extend([b"A wonderful, moving film. I loved it.", b"Terrible, boring and too long."])
        req.outputs.add(name="label")
        resp = stub.ModelInfer(req, timeout=30)
        assert [o.name for o in resp.outputs] == ["label"] and list(resp.outputs[0].shape) == [2]
        from tritonclient.utils import deserialize_bytes_tensor
        assert list(deserialize_bytes_tensor(resp.raw_output_contents[0])) == [b"positive", b"negative"]

        req = service_pb2.ModelInferRequest(model_name="gan")
        t = req.inputs.add(name="latent", datatype="FP32", shape=[1, 100])
        t.contents.fp32_contents.extend([0.5] * 100)
        resp = stub.ModelInfer(req, timeout=30)
        image = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(list(resp.outputs[0].shape))
        assert image.shape == (1, 28, 28, 1) and np.isfinite(image).all()

        req = service_pb2.ModelInferRequest(model_name="gan")
        t = req.inputs.add(name="latent", datatype="FP32", shape=[1, 100])
        t.contents.fp32_contents.extend([0.5] * 99)  # one value short of the shape
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(req, timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
