"""BentoML 1.4 service serving the same ONNX MNIST model: ``POST /api/mnist/predict`` with ``{"image": grid}``
answers the same JSON as our service. The API is ``batchable=False``: BentoML's adaptive batching needs the
client to send a batch dimension, which would change the request semantics.
Run: ``bentoml serve bentoml_service:Mnist --port P`` with MODEL_PATH set (in its own virtual environment).
"""
import os

import bentoml
import numpy as np


@bentoml.service(workers=1, threads=16)
class Mnist:
    def __init__(self) -> None:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("ORT_INTRA_OP_THREADS", "2"))
        self.sess = ort.InferenceSession(os.environ["MODEL_PATH"], opts, providers=["CPUExecutionProvider"])

    @bentoml.api(route="/api/mnist/predict")
    def predict(self, image: list[list[float]]) -> dict:
        x = (np.asarray([image], dtype=np.float32) / 255.0)[..., None]
        p = self.sess.run(["probabilities"], {"image": x})[0][0]
        return {"predictions": [{"digit": int(p.argmax()), "confidence": float(p.max()),
                                 "probabilities": p.tolist()}]}
