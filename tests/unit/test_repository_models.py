"""Every shipped model: manifest validates against the schema, files match their sha256, parity and
metrics are recorded, and each graph loads in ONNX Runtime and answers a sample input."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from modelcore.manifest import ManifestError, load_and_verify, validate
from tests.conftest import MODELS, latest

BARS = {"mnist": ("test_accuracy", 0.99), "sentiment": ("test_accuracy", 0.87)}


@pytest.mark.parametrize("name", MODELS)
def test_shipped_model_verifies_and_answers(name):
    vdir = latest(name)
    m = load_and_verify(vdir)
    assert m["name"] == name
    assert m["parity"]["max_abs_diff"] <= m["parity"]["tolerance"] <= 1e-4
    corpus = m["data"].get("corpus")  # translation: every package the corpus came from, with its sha256
    assert (all(p["sha256"] for p in corpus["packages"]) if corpus else m["data"]["sha256"])
    assert m["training"]["seed"] is not None and not m["training"].get("quick")
    assert m["metrics"], "held-out metrics are recorded"
    if name in BARS:
        key, bar = BARS[name]
        assert m["metrics"][key] >= bar
    for graph in m["graphs"].values():
        sess = ort.InferenceSession(str(vdir / graph["file"]), providers=["CPUExecutionProvider"])
        feeds = {}
        for spec in graph["inputs"]:
            shape = [2 if d == -1 and i == 0 else (3 if d == -1 else d) for i, d in enumerate(spec["shape"])]
            if spec["dtype"] == "int64":
                feeds[spec["name"]] = np.full(shape, 4 if spec["name"] != "position" else 0, np.int64)
            else:
                feeds[spec["name"]] = np.ones(shape, np.float32)
            if spec["name"].startswith("cache_") and spec["name"] != "cache_mask":
                feeds[spec["name"]] = np.zeros([2, 3, spec["shape"][-1]], np.float32)
        outs = sess.run(None, feeds)
        assert all(np.all(np.isfinite(o)) for o in outs)
        assert [o.name for o in sess.get_outputs()] == [o["name"] for o in graph["outputs"]]


def test_tampered_file_is_refused(tmp_path):
    import shutil
    src = latest("mnist")
    dst = tmp_path / "mnist" / src.name
    shutil.copytree(src, dst)
    with open(dst / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    with pytest.raises(ManifestError, match="sha256"):
        load_and_verify(dst)


def test_schema_rejects_missing_fields():
    m = json.loads((latest("gan") / "manifest.json").read_text())
    del m["parity"]
    with pytest.raises(ManifestError, match="parity"):
        validate(m)


def test_translation_ships_test_pairs():
    """Version 1: 1,000 Ding pairs. Subword versions: the held-out corpus split with a domain column, at least
    1,500 pairs of which at least 500 are everyday sentences."""
    for name in ("translation_transformer", "translation_seq2seq"):
        d = latest(name)
        rows = [r.split("\t") for r in (d / "test.tsv").read_text("utf-8").strip().split("\n")]
        if json.loads((d / "manifest.json").read_text())["preprocessing"].get("tokenizer") != "sentencepiece":
            assert len(rows) >= 500 and all(len(r) == 2 for r in rows)
            continue
        assert len(rows) >= 1500 and all(len(r) == 3 for r in rows)
        assert sum(r[2] == "everyday" for r in rows) >= 500
