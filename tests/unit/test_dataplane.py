"""The data plane on its own, with no web framework loaded: a real repository of an imported model, its checks,
its deadline, and the 400 for a runtime error a request's values cause."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from services.models.model import GenericServable
from services.runtime.dataplane import DataPlane, InferRequest
from services.runtime.errors import ApiError
from services.runtime.repository import ModelRepository
from tests.conftest import ROOT
from tests.imported import import_onnx


def test_the_data_plane_imports_no_web_framework():
    code = "import sys, services.runtime.dataplane; print(sorted(m for m in sys.modules if m in ('flask', 'werkzeug')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture()
def plane(tmp_path):
    """An embedding lookup (ids [N, 3] into a table of 1000 rows), imported and served from its repository."""
    table = numpy_helper.from_array(np.arange(4000, dtype=np.float32).reshape(1000, 4), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["embedded"])], "lookup",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, 3])],
                              [helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [None, 3, 4])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    import_onnx(model, "lookup", tmp_path)
    repo = ModelRepository(tmp_path / "repo", {"lookup": GenericServable})
    repo.refresh()
    seen = []
    yield DataPlane(repo, on_lookup=lambda s: seen.append((s.name, s.version))), seen
    repo.close()


def test_infer_checks_inputs_and_reports_the_lookup(plane):
    dataplane, seen = plane
    s = dataplane.model("lookup")
    r = dataplane.infer(InferRequest(s, {"ids": np.array([[0, 1, 999]])}, id="req-1"))
    np.testing.assert_array_equal(r.outputs["embedded"][0, 2], [3996, 3997, 3998, 3999])
    assert (r.model, r.version, r.id) == ("lookup", "1", "req-1")
    assert seen == [("lookup", 1)]
    with pytest.raises(ApiError, match=r"input 'ids' has shape \[1, 4\], expected \[-1, 3\]"):
        dataplane.infer(InferRequest(s, {"ids": np.array([[0, 1, 2, 3]])}))
    with pytest.raises(ApiError, match=r"unknown input\(s\) \['x'\]"):
        dataplane.infer(InferRequest(s, {"x": np.array([[0, 1, 2]])}))
    with pytest.raises(ApiError, match="has datatype FP32, but model 'lookup' expects INT64"):
        dataplane.infer(InferRequest(s, {"ids": np.zeros((1, 3), np.float32)}, strict_datatype=True))
    with pytest.raises(ApiError, match="unknown parameter 'beam'"):
        dataplane.infer(InferRequest(s, {"ids": np.array([[0, 1, 2]])}, {"beam": 4}))


def test_a_runtime_error_the_values_cause_is_a_400_naming_the_input(plane):
    dataplane, _ = plane
    s = dataplane.model("lookup")
    with pytest.raises(ApiError) as refused:
        dataplane.infer(InferRequest(s, {"ids": np.array([[0, 5000, 1]])}))
    assert refused.value.status == 400 and refused.value.field == "ids"
    assert "idx=5000 must be within the inclusive range [-1000,999]" in refused.value.message
