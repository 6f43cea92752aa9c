"""SIGTERM drains in-flight requests: streams under way when the signal arrives run to their end."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.conftest import ROOT, free_port_block


def test_sigterm_drains_in_flight_requests(tmp_path):
    port = free_port_block(1)
    env = {**os.environ, "PORT": str(port), "GUNICORN_GRACEFUL_TIMEOUT": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "services", "textgen"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if requests.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
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
