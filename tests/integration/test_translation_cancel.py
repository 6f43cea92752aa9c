"""Beam searches nobody waits for stop decoding: 32 beam-4 translations of a long sentence, given up mid-decode
through the gateway by each route that can give up (v2's ``timeout``, a gRPC deadline, a client that hangs up).
The translation decoder's steps stop well short of what the finished translations take (counted, not timed),
and its active-sequence gauge falls to 0."""
from __future__ import annotations

import socket
import time

import numpy as np
import orjson
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.integration.test_deadlines import active_sequences, decoder_steps

MODEL = "translation_transformer"
LONG = ("When the installation has finished, restart the computer, open the settings window again and check that "
        "every package you selected is listed with its version, its size and its description, then close it.")
BODY = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [32], "data": [LONG] * 32}],
        "parameters": {"beam_size": 4}}


def steps(stack) -> int:
    return decoder_steps(stack, MODEL)


def wait_idle(stack) -> int:
    """-> the decoder's step count once no sequence is left in it and no step is taken any more."""
    deadline = time.time() + 10
    while active_sequences(stack, "translation") > 0:
        assert time.time() < deadline, f"{active_sequences(stack, 'translation'):.0f} sequences still decoding"
        time.sleep(0.02)
    while True:
        n = steps(stack)
        time.sleep(0.3)
        if steps(stack) == n:
            return n
        assert time.time() < deadline, "the decoder still steps"


@pytest.fixture(scope="module")
def full_run_steps(stack) -> int:
    """The steps that the 32 translations take when someone waits for them."""
    before = wait_idle(stack)
    r = requests.post(stack.url + f"/v2/models/{MODEL}/infer", data=orjson.dumps(BODY), timeout=120)
    assert r.status_code == 200, r.text
    return wait_idle(stack) - before


def assert_given_up(stack, before: int, full: int) -> None:
    taken = wait_idle(stack) - before
    assert taken < full / 2, f"{taken} decoder steps after giving up, of {full} for the whole translations"


def test_v2_timeout_stops_the_beam_searches(stack, full_run_steps):
    before = wait_idle(stack)
    r = requests.post(stack.url + f"/v2/models/{MODEL}/infer", timeout=60,
                      data=orjson.dumps({**BODY, "parameters": {"beam_size": 4, "timeout": 300_000}}))
    assert r.status_code == 504 and r.json()["field"] == "timeout", r.text
    assert_given_up(stack, before, full_run_steps)


def test_grpc_deadline_stops_the_beam_searches(stack, full_run_steps):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{stack.grpc_v2_port}")
    x = grpcclient.InferInput("text", [32], "BYTES")
    x.set_data_from_numpy(np.array([LONG.encode()] * 32, dtype=object))
    before = wait_idle(stack)
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [x], parameters={"beam_size": 4}, client_timeout=0.3)
    assert e.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert_given_up(stack, before, full_run_steps)


def test_a_client_that_hangs_up_stops_the_beam_searches(stack, full_run_steps):
    body = orjson.dumps({"texts": [LONG] * 32, "beam_size": 4})
    before = wait_idle(stack)
    sock = socket.create_connection(("127.0.0.1", stack.gateway_port))
    sock.sendall(b"POST /api/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    deadline = time.time() + 10
    while steps(stack) == before:  # it is decoding
        assert time.time() < deadline, "the translations did not start"
        time.sleep(0.02)
    sock.close()
    assert_given_up(stack, before, full_run_steps)
