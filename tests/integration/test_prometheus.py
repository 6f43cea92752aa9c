"""Debian's Prometheus scrapes the running stack with the project's rules (monitoring/rules.yml): every service
and the gateway are up, and the recording rule answers each service's request rate."""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import requests
import yaml

from tests.conftest import ROOT, free_port_block

CALLS = {"mnist": ("/api/mnist/predict", {"image": [[0] * 28] * 28}),
         "sentiment": ("/api/sentiment/predict", {"text": "A fine film."}),
         "translation": ("/api/translate", {"text": "Good morning.", "beam_size": 1}),
         "textgen": ("/api/generate", {"prompt": "ROMEO:", "max_tokens": 5, "seed": 1}),
         "gan": ("/api/gan/sample", {"n": 1, "seed": 1})}


def query(url: str, expr: str) -> list[dict]:
    r = requests.get(url + "/api/v1/query", params={"query": expr}, timeout=10)
    r.raise_for_status()
    return r.json()["data"]["result"]


def test_prometheus_scrapes_the_stack_and_the_rules_answer_each_services_request_rate(stack, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: `make test` installs it (apt-get install prometheus)")
    targets = {**{name: url.removeprefix("http://") for name, url in stack.service_url.items()},
               "gateway": stack.url.removeprefix("http://")}
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(ROOT / "monitoring" / "rules.yml")],
              "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                                 for job, target in targets.items()]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port_block(1)
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))
    try:
        deadline = time.time() + 90
        rates: dict[str, float] = {}
        while set(rates) != set(CALLS):
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.time() < deadline, f"request rates seen: {rates}"
            for path, body in CALLS.values():  # traffic for every service, through the gateway
                assert requests.post(stack.url + path, json=body, timeout=30).status_code == 200
            try:
                rates = {s["metric"]["job"]: float(s["value"][1])
                         for s in query(url, "job:model_requests:rate1m") if float(s["value"][1]) > 0}
            except requests.RequestException:
                pass  # not serving its API yet
            time.sleep(0.5)
        up = {s["metric"]["job"]: s["value"][1] for s in query(url, "up")}
        assert up == {job: "1" for job in targets}, up
        assert query(url, 'gateway:requests:rate1m{route="native"}')
    finally:
        proc.terminate()
        proc.wait(30)
