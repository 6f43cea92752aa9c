"""MLServer custom runtime serving the same ONNX MNIST model over the Open Inference Protocol v2.

MLServer has no ONNX runtime of its own, so this is the documented custom-runtime route (``MLModel`` with
``load``/``predict``). The bench enables MLServer's adaptive batching (``max_batch_size`` /
``max_batch_time`` in model-settings.json), its best configuration for many small requests. One request
carries one 28x28 digit as a v2 FP32 tensor (same semantics as ``POST /api/mnist/predict``) and gets back
the ten probabilities.
"""
import os

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class MnistRuntime(MLModel):
    async def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("ORT_INTRA_OP_THREADS", "2"))
        self.sess = ort.InferenceSession(os.environ["MODEL_PATH"], opts, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32).reshape(-1, 28, 28, 1) / 255.0
        probs = self.sess.run(["probabilities"], {"image": x})[0]
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output("probabilities", probs)])
