"""``python -m training import``: ONNX models made here with onnx.helper (no Keras at all), checked by running
them; what the manifest records, the batching it proves, and refusals that name the cause and write nothing."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelcore.manifest import load_and_verify
from tests.conftest import ROOT
from training import importer


def two_in_two_out(batch=None, opset=17, image_type=TensorProto.FLOAT):
    """image [batch, 4, 4, 1] and token ids [batch, 3] -> doubled image, ids + 1."""
    image = helper.make_tensor_value_info("image", image_type, [batch, 4, 4, 1])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [batch, 3])
    doubled = helper.make_tensor_value_info("doubled", image_type, [batch, 4, 4, 1])
    shifted = helper.make_tensor_value_info("shifted", TensorProto.INT64, [batch, 3])
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    graph = helper.make_graph([helper.make_node("Add", ["image", "image"], ["doubled"]),
                               helper.make_node("Add", ["ids", "one"], ["shifted"])],
                              "g", [image, ids], [doubled, shifted], [one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def centred():
    """x - mean over the batch: each row's answer depends on the others, so batching would change answers."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
                               helper.make_node("Sub", ["x", "m"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(tmp_path, model, *extra):
    src = tmp_path / "src.onnx"
    if isinstance(model, bytes):
        src.write_bytes(model)
    else:
        onnx.save(model, src)
    code = importer.main(["mine", str(src), "--out", str(tmp_path / "repo"), *extra])
    return code, tmp_path / "repo" / "mine"


def test_an_onnx_model_is_imported_with_its_tensors_batching_samples_and_checksums(tmp_path, capsys):
    code, root = run(tmp_path, two_in_two_out(), "--max-batch-size", "16")
    assert code == 0 and "inputs drawn from the signature" in capsys.readouterr().out
    m = load_and_verify(root / "1")  # every file's sha256 checked
    graph = m["graphs"]["model"]
    assert [(t["name"], t["dtype"], t["shape"]) for t in graph["inputs"]] == [
        ("image", "float32", [-1, 4, 4, 1]), ("ids", "int64", [-1, 3])]
    assert [t["name"] for t in graph["outputs"]] == ["doubled", "shifted"]
    assert m["batching"]["max_batch_size"] == 16 and m["task"] == "generic"
    assert len(m["data"]["source_sha256"]) == 64 and m["data"]["opset"] == 17
    assert "onnxruntime" in m["libraries"] and "model.onnx" in m["files"] and "samples.npz" in m["files"]
    with np.load(root / "1" / "samples.npz") as s:
        assert s["image"].shape == (4, 4, 4, 1) and s["ids"].dtype == np.int64


def test_given_samples_are_used_and_a_second_import_is_the_next_version(tmp_path, capsys):
    np.savez(tmp_path / "s.npz", image=np.ones((2, 4, 4, 1), np.float32), ids=np.arange(6).reshape(2, 3))
    assert run(tmp_path, two_in_two_out(), "--samples", str(tmp_path / "s.npz"))[0] == 0
    code, root = run(tmp_path, two_in_two_out(), "--samples", str(tmp_path / "s.npz"))
    assert code == 0 and "drawn" not in capsys.readouterr().out
    with np.load(root / "2" / "samples.npz") as s:
        assert s["ids"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_a_fixed_batch_dimension_is_served_unbatched_and_the_import_says_so(tmp_path, capsys):
    code, root = run(tmp_path, two_in_two_out(batch=1))
    assert code == 0 and "served unbatched" in capsys.readouterr().out
    assert load_and_verify(root / "1")["batching"]["max_batch_size"] == 0


def test_rows_that_change_each_others_answers_are_not_batched(tmp_path):
    code, root = run(tmp_path, centred())
    assert code == 0 and load_and_verify(root / "1")["batching"]["max_batch_size"] == 1


@pytest.mark.parametrize("model, extra, why", [
    (two_in_two_out(opset=99), (), "opset 99 is newer than this ONNX"),
    (b"\x08\x07garbage, not a model", (), "is not a readable ONNX file"),
    (two_in_two_out(image_type=TensorProto.DOUBLE), (),
     "float64 input 'image': cast it to float32 in the model, or keep it with --allow-fp64"),
])
def test_refusals_name_the_cause_and_the_fix_and_write_nothing(tmp_path, capsys, model, extra, why):
    code, root = run(tmp_path, model, *extra)
    assert code == 1 and why in capsys.readouterr().out
    assert not root.exists() or not any(p.name.isdigit() for p in root.iterdir())


def test_float64_is_kept_when_asked_and_the_command_line_runs(tmp_path):
    src = tmp_path / "f64.onnx"
    onnx.save(two_in_two_out(image_type=TensorProto.DOUBLE), src)
    proc = subprocess.run([sys.executable, "-m", "training", "import", "f64", str(src), "--allow-fp64",
                           "--out", str(tmp_path / "repo")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = json.loads((tmp_path / "repo" / "f64" / "1" / "manifest.json").read_text())
    assert m["graphs"]["model"]["inputs"][0]["dtype"] == "float64"
