"""SIGTERM drains in-flight requests: streams under way when the signal arrives run to their end."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.conftest import ROOT, free_port_block, wait_until_ready


def test_sigterm_drains_in_flight_requests(tmp_path):
    port = free_port_block(1)
    env = {**os.environ, "PORT": str(port), "GUNICORN_GRACEFUL_TIMEOUT": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "services", "textgen"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc)
        results, started = [], threading.Barrier(7)

        def call(i):
            # a stream, so the request is provably in flight (first token received) when SIGTERM arrives
            with requests.post(url + "/api/generate", json={"prompt": "ROMEO:", "max_tokens": 1000, "seed": i,
                                                            "stream": True}, stream=True, timeout=60) as r:
                lines = r.iter_lines()
                first = next(line for line in lines if line.startswith(b"data: "))
                started.wait(30)
                rest = [line for line in lines if line.startswith(b"data: ")]
                done = json.loads(rest[-1][6:])
                results.append((r.status_code, len([first] + rest) - 1, len(done["text"])))
        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        [t.start() for t in threads]
        started.wait(60)  # every stream has its first token
        proc.send_signal(signal.SIGTERM)
        [t.join() for t in threads]
        assert results == [(200, 1000, 1000)] * 6, results
        assert proc.wait(40) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/v2/health/live", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()


LONG = ("When the installation has finished, restart the computer, open the settings window again and check that "
        "every package you selected is listed with its version and its description.")


def test_sigterm_to_the_stack_drains_every_kind_of_request_through_the_gateway():
    """SIGTERM to `make serve`'s process while streams, translations and v2 batches are in flight through the
    gateway: each completes with its whole answer, new connections are refused once the drain has begun, and
    no process of the stack is left."""
    import psutil

    from tests.conftest import Stack
    stack = Stack({"GUNICORN_GRACEFUL_TIMEOUT": "60"})
    try:
        stack.wait_ready()
        results: dict[str, list] = {"stream": [], "translate": [], "v2": []}
        streaming = threading.Barrier(4)

        def stream(i):
            with requests.post(stack.url + "/api/generate", json={"prompt": "ROMEO:", "max_tokens": 800, "seed": i,
                                                                  "stream": True}, stream=True, timeout=120) as r:
                lines = r.iter_lines()
                next(line for line in lines if line.startswith(b"data: "))  # in flight: the first token is here
                streaming.wait(60)
                done = json.loads([line for line in lines if line.startswith(b"data: ")][-1][6:])
                results["stream"].append((r.status_code, len(done["text"])))

        def translate(i):
            r = requests.post(stack.url + "/api/translate", json={"texts": [LONG] * 16, "beam_size": 8}, timeout=120)
            results["translate"].append((r.status_code, len(r.json().get("translations", []))))

        def v2_batch(i):
            r = requests.post(stack.url + "/v2/models/translation_seq2seq/infer", timeout=120, json={
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [16], "data": [LONG] * 16}],
                "parameters": {"beam_size": 8}})
            results["v2"].append((r.status_code, r.json().get("outputs", [{}])[0].get("shape")))
        slow = [threading.Thread(target=f, args=(i,)) for f in (translate, v2_batch) for i in range(2)]
        [t.start() for t in slow]
        time.sleep(1.0)  # 16 beam-8 translations each: seconds of decoding, under way when the streams start
        streams = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
        [t.start() for t in streams]
        streaming.wait(60)  # every stream has its first token
        stack_processes = psutil.Process(stack.proc.pid).children(recursive=True)
        assert any(t.is_alive() for t in slow), "the translations finished before the drain: make them longer"
        stack.proc.send_signal(signal.SIGTERM)

        # the streams may be written out already (their tokens wait in the socket): the translations are what
        # must still be in flight when a new connection is refused
        refused_while_draining = False
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=1).close()
            except ConnectionRefusedError:
                refused_while_draining = any(t.is_alive() for t in slow)
                break
            time.sleep(0.05)
        [t.join(120) for t in streams + slow]
        assert results["stream"] == [(200, 800)] * 3, results
        assert results["translate"] == [(200, 16)] * 2, results
        assert results["v2"] == [(200, [16])] * 2, results
        assert refused_while_draining, "no new connection was refused while translations were in flight"
        assert stack.proc.wait(90) == 0
        alive = [p for p in stack_processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, [p.cmdline() for p in alive]
    finally:
        stack.stop()
