"""One copy of the weights per pod: 40 imported models in one models service with 2 workers, each model called
on both workers; the service's proportional set size (PSS: shared pages counted once), master and workers
together, grows by at most 1.3 times the bytes of the model files, plus a stated overhead per session (each
worker's session of each model: its graph and kernels, about 0.4 MB; bench/results/vm/FINDINGS.md)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import requests

from bench.run import free_port
from tests.conftest import ROOT, wait_until_ready
from tests.imported import import_onnx, mlp

MODELS, WORKERS = 40, 2
SESSION_OVERHEAD = 512 * 1024


def pss_of(repo, workdir) -> tuple[int, int]:
    """(PSS of the models service on ``repo`` once every model answered on every worker, its models' file
    bytes)."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "MODEL_REPOSITORY": str(repo), "WEB_CONCURRENCY": str(WORKERS),
           "MODEL_POLL_SECONDS": "0", "LOG_LEVEL": "warning", "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
           "MODEL_CONTROL_FILE": str(workdir / "control.json")}
    proc = subprocess.Popen([sys.executable, "-m", "services", "models"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, proc)
        x = np.ones((1, 784), np.float32).reshape(-1).tolist()
        for name in sorted(p.name for p in repo.iterdir() if p.is_dir()):
            for _ in range(40):  # new connections, which the kernel spreads over the workers' sockets
                r = requests.post(f"{url}/v2/models/{name}/infer", headers={"Connection": "close"}, timeout=30,
                                  json={"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": x}]})
                assert r.status_code == 200, r.text
        time.sleep(0.5)
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        pss = sum(p.memory_full_info().pss for p in tree)
        files = sum(f.stat().st_size for f in repo.rglob("model.onnx*"))
        return pss, files
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def test_forty_models_on_two_workers_hold_their_weights_about_once(tmp_path):
    for i in range(MODELS):
        import_onnx(mlp(i), f"m{i:02d}", tmp_path, "--max-batch-size", "8")
    (tmp_path / "empty").mkdir()
    empty, _ = pss_of(tmp_path / "empty", tmp_path)
    pss, files = pss_of(tmp_path / "repo", tmp_path)
    added = pss - empty
    allowed = 1.3 * files + SESSION_OVERHEAD * MODELS * WORKERS
    print(f"PSS {pss / 1e6:.0f} MB, empty {empty / 1e6:.0f} MB, files {files / 1e6:.0f} MB: added "
          f"{added / files:.2f}x the files")
    assert added <= allowed, f"the service added {added / 1e6:.0f} MB for {files / 1e6:.0f} MB of files"
