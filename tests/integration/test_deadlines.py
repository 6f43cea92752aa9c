"""A generation whose client has gone, or whose deadline passed, leaves the decoder: through the gateway, with
v2's ``timeout`` parameter, a gRPC deadline, the openai client's timeout, and clients that hang up (streaming
or not). Each starts 64 sequences of 1,000 tokens (over a second of decoding on the fastest machine seen, about
2,000 steps a second) and gives up after 0.1 s; the textgen service's active-sequence gauge must then fall to 0
and its step count stop moving, well short of the 1,000 steps (counted, so that a loaded machine cannot fake a
pass or a failure)."""
from __future__ import annotations

import socket
import time

import numpy as np
import openai
import orjson
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

PROMPTS = ["ROMEO:\n"] * 64


def decoder_steps(stack, model: str = "textgen") -> int:
    return requests.get(stack.url + f"/v2/models/{model}/stats", timeout=10).json()["model_stats"][0]["execution_count"]


def active_sequences(stack, service: str = "textgen") -> float:
    text = requests.get(stack.service_url[service] + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("model_decoder_active_sequences"))


def assert_decoder_falls_idle(stack, steps_before: int) -> None:
    """The sequences leave the decoder and the steps stop, long before the 1,000 a finished generation takes:
    counted in decoder steps, which a loaded machine slows as much as the client's clock."""
    deadline = time.time() + 10
    while active_sequences(stack) > 0:
        assert time.time() < deadline, f"{active_sequences(stack):.0f} sequences still in the decoder"
        time.sleep(0.02)
    steps = decoder_steps(stack)
    time.sleep(0.3)
    assert decoder_steps(stack) == steps
    assert steps - steps_before < 500, f"{steps - steps_before} decoder steps ran, of 1,000 for nobody"


def wait_for_active(stack, n: int) -> None:
    deadline = time.time() + 10
    while active_sequences(stack) != n:
        assert time.time() < deadline, f"{active_sequences(stack):.0f} sequences in the decoder, not {n}"
        time.sleep(0.02)


def test_v2_timeout_parameter(stack):
    body = {"inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [64], "data": PROMPTS}],
            "parameters": {"max_tokens": 1000, "timeout": 100_000}}  # microseconds, as Triton's
    before = decoder_steps(stack)
    r = requests.post(stack.url + "/v2/models/textgen/infer", data=orjson.dumps(body), timeout=60)
    assert r.status_code == 504 and r.json()["field"] == "timeout"
    assert_decoder_falls_idle(stack, before)
    r = requests.post(stack.url + "/v2/models/textgen/infer", data=orjson.dumps(
        {**body, "parameters": {"timeout": 0}}), timeout=10)
    assert r.status_code == 400 and r.json()["field"] == "timeout"


def test_grpc_deadline(stack):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{stack.grpc_v2_port}")
    inp = grpcclient.InferInput("prompt", [64], "BYTES")
    inp.set_data_from_numpy(np.array([p.encode() for p in PROMPTS], dtype=object))
    before = decoder_steps(stack)
    with pytest.raises(InferenceServerException) as e:
        client.infer("textgen", [inp], parameters={"max_tokens": 1000}, client_timeout=0.1)
    assert e.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert_decoder_falls_idle(stack, before)


def test_openai_client_timeout(stack):
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0, timeout=0.1)
    before = decoder_steps(stack)
    with pytest.raises(openai.APITimeoutError):
        client.completions.create(model="textgen", prompt="ROMEO:\n", n=64, max_tokens=1000)
    assert_decoder_falls_idle(stack, before)


@pytest.mark.parametrize("stream", [False, True])
def test_client_that_hangs_up(stack, stream):
    body = orjson.dumps({"model": "textgen", "prompt": "ROMEO:\n", "n": 64, "max_tokens": 1000, "stream": stream})
    host, port = stack.url.replace("http://", "").split(":")
    before = decoder_steps(stack)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    if stream:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # the stream has begun
    wait_for_active(stack, 64)  # it is decoding
    sock.close()
    assert_decoder_falls_idle(stack, before)
