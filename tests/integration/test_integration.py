"""The real stack (supervisord + gunicorn services + gateway, as `make serve` runs it), called with the
official Triton client (JSON and binary modes), with plain HTTP like curl, and with faults injected."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bench import loadgen
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def triton(stack):
    return httpclient.InferenceServerClient(stack.url.replace("http://", ""), connection_timeout=10,
                                            network_timeout=60)


def test_stack_is_ready_and_lists_every_model(stack):
    r = requests.get(stack.url + "/v2/health/ready", timeout=5)
    assert r.status_code == 200 and all(b["ready"] for b in r.json()["backends"].values())
    models = requests.get(stack.url + "/api/models", timeout=10).json()["models"]
    names = {m["name"] for m in models if m["state"] == "AVAILABLE"}
    assert names == {"mnist", "sentiment", "translation_transformer", "translation_seq2seq", "textgen", "gan"}
    device = "cuda" if os.environ.get("MODEL_DEVICE") == "cuda" else "cpu"  # the suite on a GPU: MODEL_DEVICE=cuda
    assert all(m["metrics"] and m["device"] == device for m in models)


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_mnist(triton, mnist_test_digits, binary):
    x, y = mnist_test_digits
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready("mnist")
    meta = triton.get_model_metadata("mnist")
    assert meta["inputs"][0]["name"] == "image"
    batch = (x[:16] / 255.0).astype(np.float32)[..., None]
    inp = httpclient.InferInput("image", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary)
    out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
    res = triton.infer("mnist", [inp], outputs=[out])
    probs = res.as_numpy("probabilities")
    assert probs.shape == (16, 10) and (probs.argmax(1) == y[:16]).mean() >= 0.9


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_text_models_bytes(triton, binary):
    texts = np.array([b"A wonderful, moving film. I loved it.", b"Terrible, boring and far too long."],
                     dtype=object)
    inp = httpclient.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(texts, binary_data=binary)
    res = triton.infer("sentiment", [inp], outputs=[httpclient.InferRequestedOutput("label", binary_data=binary)])
    assert [b.decode() if isinstance(b, bytes) else b for b in res.as_numpy("label")] == ["positive", "negative"]

    p = httpclient.InferInput("prompt", [1], "BYTES")
    p.set_data_from_numpy(np.array([b"ROMEO:\n"], dtype=object), binary_data=binary)
    res = triton.infer("textgen", [p], parameters={"max_tokens": 20, "seed": 4})  # default: binary outputs
    assert len(res.as_numpy("text")[0]) == 20

    t = httpclient.InferInput("text", [1], "BYTES")
    t.set_data_from_numpy(np.array([b"Good morning."], dtype=object), binary_data=binary)
    res = triton.infer("translation_transformer", [t], parameters={"beam_size": 2})
    assert res.as_numpy("translation")[0]


def test_tritonclient_gan_versions(triton):
    z = np.random.default_rng(0).standard_normal((3, 100)).astype(np.float32)
    inp = httpclient.InferInput("latent", [3, 100], "FP32")
    inp.set_data_from_numpy(z)
    res = triton.infer("gan", [inp])
    assert res.as_numpy("image").shape == (3, 28, 28, 1)
    with pytest.raises(InferenceServerException) as e:
        triton.infer("gan", [inp], model_version="999")
    assert e.value.status() == "404" and "version 999 of model 'gan' is not loaded" in e.value.message()


def test_tritonclient_model_control_and_statistics(stack, triton):
    """load_model, unload_model and get_inference_statistics unchanged, through the gateway, on a service with
    several workers: every worker of the service sees the unload (polling, in tests/unit/test_model_control)."""
    def fresh():  # a new connection: the kernel spreads those over the service's workers
        return httpclient.InferenceServerClient(stack.url.replace("http://", ""))
    z = np.zeros((2, 100), np.float32)
    inp = httpclient.InferInput("latent", [2, 100], "FP32")
    inp.set_data_from_numpy(z)
    def counts():
        s = triton.get_inference_statistics("gan")["model_stats"][0]
        return s["inference_stats"]["success"]["count"], s["inference_stats"]["fail"]["count"], \
            sum(b["compute_infer"]["count"] for b in s["batch_stats"] if b["batch_size"] == 2)
    before = counts()
    for _ in range(5):
        triton.infer("gan", [inp])
    bad = httpclient.InferInput("latent", [2, 7], "FP32")
    bad.set_data_from_numpy(np.zeros((2, 7), np.float32))
    with pytest.raises(InferenceServerException) as e:
        triton.infer("gan", [bad])
    assert e.value.status() == "400" and "latent" in e.value.message()
    after = counts()  # exactly what was sent: 5 answered, 1 refused, and 5 runs of 2 rows
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (5, 1, 5)
    everyone = {s["name"] for s in triton.get_inference_statistics()["model_stats"]}
    assert {"mnist", "gan", "textgen", "translation_transformer"} <= everyone
    triton.unload_model("gan")
    try:
        assert not triton.is_model_ready("gan")
        for _ in range(6):
            with pytest.raises(InferenceServerException) as e:
                fresh().infer("gan", [inp])
            assert e.value.status() == "503" and "'gan' is unloaded" in e.value.message()
        index = {(m["name"], m["state"]) for m in triton.get_model_repository_index()}
        assert ("gan", "UNAVAILABLE") in index and ("mnist", "READY") in index
        assert triton.is_server_ready()
    finally:
        triton.load_model("gan")
    assert triton.is_model_ready("gan")
    for _ in range(6):
        assert fresh().infer("gan", [inp]).as_numpy("image").shape == (2, 28, 28, 1)


def test_curl_style_calls_through_gateway(stack, mnist_test_digits):
    x, y = mnist_test_digits
    u = stack.url
    # curl -d sends application/x-www-form-urlencoded; the API reads JSON anyway
    r = requests.post(u + "/api/mnist/predict", data=json.dumps({"image": x[0].tolist()}),
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert r.status_code == 200 and r.json()["predictions"][0]["digit"] == y[0]
    r = requests.post(u + "/v1/models/sentiment:predict", json={"instances": ["Great fun, superb acting."]}, timeout=10)
    assert r.json()["predictions"][0]["label"] == "positive"
    r = requests.post(u + "/api/translate", json={"text": "Where is the station?", "beam_size": 3}, timeout=30)
    assert r.status_code == 200 and r.json()["translation"]
    r = requests.post(u + "/api/gan/sample", json={"n": 4, "seed": 1, "format": "png"}, timeout=10)
    assert r.headers["Content-Type"] == "image/png" and r.content[:4] == b"\x89PNG"
    r = requests.get(u + "/v1/models/translation_seq2seq/metadata", timeout=10)
    assert r.json()["model_spec"]["name"] == "translation_seq2seq"
    r = requests.get(u + "/nope", headers={"X-Request-ID": "trace-1"}, timeout=5)
    assert r.status_code == 404 and r.json()["error"] and r.headers["X-Request-ID"] == "trace-1"
    assert requests.get(u + "/openapi.json", timeout=5).json()["paths"]["/api/generate"]
    assert "swagger-ui" in requests.get(u + "/docs", timeout=5).text
    assert "gateway_requests_total" in requests.get(u + "/metrics", timeout=5).text


def test_sse_streams_through_gateway_as_it_comes(stack):
    arrivals = []  # the body's pieces as the socket delivered them
    with requests.post(stack.url + "/api/generate", json={"prompt": "HAMLET:\n", "max_tokens": 400, "seed": 9,
                                                          "stream": True}, stream=True, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        arrivals = list(r.iter_content(chunk_size=None))
    events = [json.loads(line[6:]) for line in b"".join(arrivals).split(b"\n") if line.startswith(b"data: ")]
    tokens = [ev["token"] for ev in events if "token" in ev]
    assert "".join(tokens) == events[-1]["text"] and len(tokens) == 400
    # not buffered until the end: the tokens came in several pieces, the first without the end (counted, not
    # timed: a loaded machine only makes more pieces)
    assert len(arrivals) >= 3 and b'"text"' not in arrivals[0], [len(a) for a in arrivals]


def test_body_size_limit_is_413(stack):
    r = requests.post(stack.url + "/api/sentiment/predict", data=b"x" * (17 * 1024 * 1024), timeout=30)
    assert r.status_code == 413 and r.json()["limit"] == 16 * 1024 * 1024


def test_killed_service_fails_fast_and_is_restarted(stack):
    """SIGKILL the gan service (master and workers, as the OOM killer may): the gateway answers 503 fast for gan
    only, the supervisor restarts it and it serves again."""
    import psutil
    pid = int(stack.ctl("pid", "services:gan").stdout.strip())
    for proc in [psutil.Process(pid), *psutil.Process(pid).children()]:
        proc.kill()
    t0 = time.perf_counter()
    r = requests.post(stack.url + "/api/gan/sample", json={"n": 1, "seed": 1}, timeout=5)
    assert r.status_code == 503 and "gan" in r.json()["error"], r.text
    assert time.perf_counter() - t0 < 2.0  # refused at once, not after the 60 s upstream timeout
    assert requests.post(stack.url + "/api/sentiment/predict", json={"text": "fine"}, timeout=5).status_code == 200
    deadline = time.time() + 90
    while time.time() < deadline:
        new_pid = stack.ctl("pid", "services:gan").stdout.strip()
        if new_pid.isdigit() and int(new_pid) not in (0, pid) and requests.post(
                stack.url + "/api/gan/sample", json={"n": 1, "seed": 1}, timeout=5).status_code == 200:
            break
        time.sleep(0.5)
    else:
        pytest.fail("gan was not restarted")


def test_stopped_backend_503_circuit_and_readiness(stack):
    assert "stopped" in stack.ctl("stop", "services:gan").stdout
    try:
        # workers of a master killed by the previous test may still be draining their kept-alive connections
        # for a moment (gunicorn answers those with Connection: close); wait for the first 503
        deadline = time.time() + 10
        while requests.post(stack.url + "/api/gan/sample", json={"n": 1}, timeout=5).status_code != 503:
            assert time.time() < deadline, "gan still answers after it was stopped"
            time.sleep(0.2)
        times = []
        for _ in range(16):  # each gateway worker keeps its own breaker: a few failures open each of them
            t0 = time.perf_counter()
            r = requests.post(stack.url + "/api/gan/sample", json={"n": 1}, timeout=5)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 503 and "gan" in r.json()["error"]
            if "circuit open" in r.json()["error"]:
                break
        assert max(times) < 2.0  # fast, not the 60 s upstream timeout
        assert "circuit open" in r.json()["error"]
        ready = requests.get(stack.url + "/v2/health/ready", timeout=5)
        assert ready.status_code == 503 and ready.json()["backends"]["gan"]["ready"] is False
        assert requests.post(stack.url + "/api/mnist/predict", json={"image": [[0] * 28] * 28},
                             timeout=5).status_code == 200
    finally:
        stack.ctl("start", "services:gan")
    deadline = time.time() + 90
    while time.time() < deadline:
        if requests.get(stack.url + "/v2/health/ready", timeout=5).status_code == 200:
            break
        time.sleep(0.5)
    # each gateway worker's breaker closes on its own next trial call (after GATEWAY_BREAKER_RESET_SECONDS)
    deadline = time.time() + 15
    while requests.post(stack.url + "/api/gan/sample", json={"n": 1, "seed": 2}, timeout=5).status_code != 200:
        assert time.time() < deadline, "gan did not serve again through the gateway"
        time.sleep(0.3)


def test_killed_worker_is_replaced_and_no_request_fails(stack):
    """SIGKILL one gunicorn worker of the mnist service while clients call it through the gateway: the master
    replaces the worker, the other worker keeps serving, and the gateway retries a request whose keep-alive
    connection died with the worker, so no request fails."""
    import psutil
    master = int(stack.ctl("pid", "services:mnist").stdout.strip())
    workers = psutil.Process(master).children()
    assert workers, "mnist has no worker processes"
    body = {"image": [[0] * 28] * 28}
    results, stop = [], threading.Event()

    def client():
        with requests.Session() as s:
            while not stop.is_set():
                results.append(s.post(stack.url + "/api/mnist/predict", json=body, timeout=10).status_code)
    threads = [threading.Thread(target=client) for _ in range(4)]
    [t.start() for t in threads]
    time.sleep(1.0)
    os.kill(workers[0].pid, signal.SIGKILL)
    deadline = time.time() + 30
    while time.time() < deadline and len(psutil.Process(master).children()) < len(workers):
        time.sleep(0.2)
    time.sleep(1.0)
    stop.set()
    [t.join() for t in threads]
    assert len(psutil.Process(master).children()) == len(workers), "the killed worker was not replaced"
    assert workers[0].pid not in [w.pid for w in psutil.Process(master).children()]
    assert len(results) > 50 and set(results) == {200}, {c: results.count(c) for c in set(results)}


def test_a_second_stack_on_busy_ports_fails_at_once_and_the_first_keeps_serving(stack):
    """Workers share their master's socket (no SO_REUSEPORT): a stack started on ports the running one holds
    exits non-zero within 5 s, naming the port and the process, and never takes a share of the traffic."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "services.stack", "--gateway-port", str(stack.gateway_port),
                           "--base-port", str(stack.base)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and time.time() - t0 < 5
    assert f"port {stack.gateway_port}" in proc.stderr and "in use (pid " in proc.stderr, proc.stderr
    one = subprocess.run([sys.executable, "-m", "services", "mnist"], cwd=ROOT, capture_output=True, text=True,
                         timeout=30, env={**os.environ, "PORT": str(stack.base), "HOST": "127.0.0.1"})
    assert one.returncode != 0 and f"port {stack.base}" in one.stderr
    assert all(requests.get(stack.url + "/v2/models/mnist/ready", timeout=10).status_code == 200 for _ in range(20))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stack_names_its_demo_page_and_leaves_nothing_in_the_temporary_folder(stop):
    """`make serve`'s stack: the ready line names the demo page; Ctrl-C (SIGINT to the terminal's process group)
    or SIGTERM stops it, and its temporary folder is as it was: no stack folder, no gunicorn master's
    model-control or metrics folder."""
    import tempfile

    from services.ports import StackPorts
    tmp = Path(tempfile.mkdtemp(prefix="t-"))  # short: supervisord's socket path must fit AF_UNIX's 108 bytes
    ports = StackPorts.free()
    proc = subprocess.Popen([sys.executable, "-m", "services.stack", *ports.args()], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp)}, start_new_session=True,
                            text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "stack ready" in line:
                break
        assert f"demo page http://127.0.0.1:{ports.gateway}/" in lines[-1], "".join(lines[-20:])
        assert any(p.name.startswith("model-stack-") for p in tmp.iterdir())
    finally:
        os.killpg(proc.pid, stop)  # the process group: what a terminal's Ctrl-C reaches
        proc.wait(90)
    assert proc.returncode == 0 or stop == signal.SIGINT, proc.returncode
    left = [p.name for p in tmp.iterdir() if p.name != ".ses"]  # .ses: ONNX Runtime's own, kept on purpose
    shutil.rmtree(tmp)
    assert not left, left


def test_a_lone_service_leaves_nothing_in_the_temporary_folder():
    """`python -m services NAME` on its own makes its model-control (and, with several workers, metrics) folder
    in the temporary folder; SIGTERM removes it."""
    import tempfile

    from tests.conftest import free_port_block, wait_until_ready
    tmp = Path(tempfile.mkdtemp(prefix="t-"))
    port = free_port_block(1)
    proc = subprocess.Popen([sys.executable, "-m", "services", "gan"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": str(tmp), "PORT": str(port),
                                                             "WEB_CONCURRENCY": "2"})
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", proc)
        made = [p.name for p in tmp.iterdir()]
        assert any(n.startswith("model-control-") for n in made) and any(n.startswith("prometheus-") for n in made)
    finally:
        proc.terminate()
        proc.wait(60)
    left = [p.name for p in tmp.iterdir() if p.name != ".ses"]
    shutil.rmtree(tmp)
    assert not left, left


def test_bench_stream_client_counts_every_token(stack):
    body = json.dumps({"prompt": "ROMEO:\n", "max_tokens": 40, "seed": 3, "stream": True}).encode()
    r = loadgen.stream(stack.url + "/api/generate", body, streams=3, seconds=0.5)
    assert r["errors"] == 0 and r["requests"] >= 3
    assert r["tokens"] == 40 * r["requests"]  # every generation ran to its 40 tokens, each counted once
    assert 0 < r["ttft_p50_ms"] <= r["ttft_p99_ms"]


def test_curl_uploads_answer_as_base64_through_the_gateway(stack, mnist_test_digits, tmp_path):
    """`curl -F image=@one.png` and `-F images=@a.png -F images=@b.png -F images=@c.png`, as a user would."""
    import base64
    import io

    from PIL import Image
    x, y = mnist_test_digits
    files = []
    for i in range(3):
        buf = io.BytesIO()
        Image.fromarray(255 - x[i]).resize((112, 112)).save(buf, "PNG")
        (tmp_path / f"d{i}.png").write_bytes(buf.getvalue())
        files.append(buf.getvalue())
    url = stack.url + "/api/mnist/predict"
    want = requests.post(url, json={"images": [base64.b64encode(f).decode() for f in files]},
                         timeout=30).json()["predictions"]

    def curl(*args):
        out = subprocess.run(["curl", "-s", url, *args], cwd=tmp_path, capture_output=True, timeout=30)
        return json.loads(out.stdout)["predictions"]
    assert curl("-F", "image=@d0.png") == want[:1]
    assert curl(*[a for i in range(3) for a in ("-F", f"images=@d{i}.png")]) == want
    assert [p["digit"] for p in want] == [int(v) for v in y[:3]]
