"""PyTorch models as users export them, with the real exporter (``torch.onnx.export``, torch 2.13's CPU build):
its default (dynamo) writes ``model.onnx`` plus ``model.onnx.data``, the TorchScript exporter one file; both
import, are published with their weights page-aligned beside the graph, and the models service's servable
answers like the PyTorch module, at batch sizes the trace never saw."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from modelcore.manifest import load_and_verify
from services.models.model import GenericServable
from training import importer


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = torch.nn.Linear(64, 512), torch.nn.Linear(512, 10)

    def forward(self, x):
        return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=-1)


@pytest.mark.parametrize("dynamo", [True, False])
def test_a_torch_export_imports_and_answers_like_the_module(tmp_path, monkeypatch, dynamo):
    # the exporter's compile cache (else TMPDIR/torchinductor_USER, which the suite counts as left behind)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torchinductor"))
    torch.manual_seed(0)
    net, x = Net().eval(), torch.randn(2, 64)
    (tmp_path / "export").mkdir()
    src = tmp_path / "export" / "model.onnx"
    if dynamo:  # the default exporter: the weights in model.onnx.data beside the graph
        torch.onnx.export(net, (x,), str(src), input_names=["x"], output_names=["probabilities"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=True)
        assert (src.parent / "model.onnx.data").is_file()
    else:
        torch.onnx.export(net, (x,), str(src), input_names=["x"], output_names=["probabilities"], dynamo=False,
                          dynamic_axes={"x": {0: "batch"}, "probabilities": {0: "batch"}})
    samples = tmp_path / "samples.npz"
    np.savez(samples, x=np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32))
    assert importer.main(["torchnet", str(src), "--samples", str(samples), "--out", str(tmp_path / "repo")]) == 0
    version = tmp_path / "repo" / "torchnet" / "1"
    manifest = load_and_verify(version)
    assert manifest["batching"]["max_batch_size"] == 64 and "model.onnx.data" in manifest["files"]
    graph = onnx.load(str(version / "model.onnx"), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer
               if np.prod(t.dims) * 4 >= 4096)
    servable = GenericServable(manifest, version)
    try:
        for rows in (1, 7):
            feed = torch.randn(rows, 64)
            with torch.no_grad():
                want = net(feed).numpy()
            got = servable.infer({"x": feed.numpy()}, {})["probabilities"]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    finally:
        servable.close()
