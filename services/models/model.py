"""The generic servable: an imported model (``python -m training import``), served from its manifest alone.

Its tensors, batching and samples come from the manifest that the import wrote after running the model: a
batchable model (``max_batch_size`` > 0) goes through the dynamic batcher, which joins only requests whose other
dimensions agree; one that is not runs each request alone. The stored samples warm it up and make the example
request of its metadata (the OpenAPI document and the demo page show it)."""
from __future__ import annotations

import numpy as np

from modelcore.datatypes import BY_MANIFEST
from modelcore.manifest import ManifestError
from services.runtime.config import settings
from services.runtime.errors import ApiError
from services.runtime.servable import Servable, TensorSpec

GRAPH = "model"


def specs(tensors: list[dict]) -> list[TensorSpec]:
    return [TensorSpec(t["name"], BY_MANIFEST[t["dtype"]].v2, tuple(t["shape"]), t.get("description", ""))
            for t in tensors]


class GenericServable(Servable):
    def __init__(self, manifest: dict, version_dir):
        served_by = manifest["preprocessing"].get("served_by")
        if served_by != "generic" or GRAPH not in manifest["graphs"]:
            raise ManifestError(f"{manifest['name']} version {manifest['version']} is a {manifest['task']} model, "
                                "not an imported one: serve it with its own service, or import it with "
                                "python -m training import")
        # the import writes the weights page-aligned beside the graph (training/export.py): shared by the workers
        self.mapped_weights = settings().model_shared_weights
        super().__init__(manifest, version_dir)
        graph = manifest["graphs"][GRAPH]
        self.inputs, self.outputs = specs(graph["inputs"]), specs(graph["outputs"])
        self.output_names = [t.name for t in self.outputs]
        self.labels = {out: (self.dir / f).read_text(encoding="utf-8").splitlines()
                       for out, f in manifest.get("labels", {}).items()}
        image = manifest["preprocessing"].get("image")
        self.image_inputs = {image["input"]: image} if image else {}
        # MAX_BATCH_SIZE may lower the batch the import proved, never raise it (0: proved not batchable)
        self.batching["max_batch_size"] = min(self.batching["max_batch_size"], manifest["batching"]["max_batch_size"])
        # every model gets a batcher: its queue, limits, metrics and statistics; max_batch_size 0 runs requests
        # one at a time, as the import found its rows are not independent (or its first dimension is fixed)
        # inputs the import proved may be zero-padded: requests of different lengths share a batch
        pad = {name: tuple(how) for name, how in manifest["preprocessing"].get("pad", {}).items()}
        self.run = self.batcher(GRAPH, self.output_names, pad=pad)
        self.sample = self._first_sample()

    def _first_sample(self) -> dict[str, np.ndarray]:
        """The stored samples' first row (all rows of a fixed batch): what warms up and makes the example."""
        name = self.manifest["preprocessing"].get("samples")
        if not name:
            return {}
        rows = max(self.inputs[0].shape[0], 1)
        with np.load(self.dir / name, allow_pickle=False) as f:
            return {k: f[k][:rows] for k in f.files}

    def warm_up(self) -> None:
        if self.sample:
            self.infer(self.sample, {})

    def infer(self, inputs: dict[str, np.ndarray], parameters: dict) -> dict[str, np.ndarray]:
        feeds = {k: _text(v, k) if v.dtype == object else v for k, v in inputs.items()}
        return self.run(feeds)

    def example(self) -> dict:
        """A v2 infer request of the first stored sample."""
        body = []
        for t in self.inputs:
            if t.name not in self.sample:
                continue
            arr = self.sample[t.name]
            data = [x.decode() if isinstance(x, bytes) else x for x in arr.reshape(-1).tolist()]
            body.append({"name": t.name, "shape": list(arr.shape), "datatype": t.datatype, "data": data})
        return {"inputs": body}

    def metadata(self) -> dict:
        return {**super().metadata(), "inputs": [t.as_v2() for t in self.inputs],
                "outputs": [t.as_v2() for t in self.outputs], "example": self.example(),
                "source": self.manifest["data"].get("source", "")}


def _text(arr: np.ndarray, name: str) -> np.ndarray:
    """BYTES as the graph's strings: ONNX Runtime takes str, and a client's bytes must be UTF-8."""
    try:
        return np.vectorize(lambda x: x.decode("utf-8") if isinstance(x, bytes) else str(x), otypes=[object])(arr)
    except UnicodeDecodeError:
        raise ApiError(f"input '{name}' holds bytes that are not UTF-8 text, which the model's string input "
                       "needs", field=name) from None
