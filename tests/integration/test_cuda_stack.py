"""A stack started as ``make serve`` starts it, with ``MODEL_DEVICE=cuda``: every model says it runs on the GPU
and MNIST classifies real digits through a real Triton client (skipped without a GPU)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import MODELS, Stack
from tests.unit.test_cuda import needs_gpu


@pytest.fixture(scope="module")
def cuda_stack():
    s = Stack({"MODEL_DEVICE": "cuda"})
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


@needs_gpu
def test_stack_serves_every_model_on_the_gpu(cuda_stack, mnist_test_digits):
    import requests
    import tritonclient.http as httpclient
    models = requests.get(cuda_stack.url + "/api/models", timeout=10).json()["models"]
    devices = {(m["name"], m["version"]): m.get("device") for m in models}
    assert {m["name"] for m in models} >= set(MODELS) and set(devices.values()) == {"cuda"}, devices
    x, y = mnist_test_digits
    client = httpclient.InferenceServerClient(cuda_stack.url.removeprefix("http://"))
    inp = httpclient.InferInput("image", [64, 28, 28, 1], "FP32")
    inp.set_data_from_numpy((x[:64].astype(np.float32) / 255.0)[..., None], binary_data=True)
    probs = client.infer("mnist", [inp], outputs=[httpclient.InferRequestedOutput("probabilities")]).as_numpy(
        "probabilities")
    assert (probs.argmax(1) == y[:64]).mean() >= 0.98
