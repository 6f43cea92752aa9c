"""KServe's Python model server (kserve.ModelServer, FastAPI + uvicorn) serving the same ONNX MNIST model.

A custom ``kserve.Model`` as its docs show: one ``session.run`` per request (the Python server has no
batcher; KServe batches in a separate agent sidecar). Request and response bodies are the same JSON as
``POST /api/mnist/predict``; the route is KServe's ``POST /v1/models/mnist:predict``.
Run: ``python kserve_server.py`` with MODEL_PATH and PORT set (in its own virtual environment).
"""
import os

import numpy as np
import onnxruntime as ort
from kserve import Model, ModelServer


class Mnist(Model):
    def __init__(self, name: str):
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("ORT_INTRA_OP_THREADS", "2"))
        self.sess = ort.InferenceSession(os.environ["MODEL_PATH"], opts, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        items = [payload["image"]] if "image" in payload else payload["images"]
        x = (np.asarray(items, dtype=np.float32) / 255.0)[..., None]
        probs = self.sess.run(["probabilities"], {"image": x})[0]
        return {"predictions": [{"digit": int(p.argmax()), "confidence": float(p.max()),
                                 "probabilities": p.tolist()} for p in probs]}


if __name__ == "__main__":
    ModelServer(http_port=int(os.environ["PORT"]), grpc_port=int(os.environ["GRPC_PORT"]),
                enable_grpc=False, workers=1).start([Mnist("mnist")])
