"""The baseline a user would write first: Flask + onnxruntime, one session.run per request, json module,
no batching. Same request/response semantics as ``POST /api/mnist/predict`` with 28x28 grids."""
import json
import os

import numpy as np
import onnxruntime as ort
from flask import Flask, Response, request

app = Flask(__name__)
opts = ort.SessionOptions()
opts.intra_op_num_threads = int(os.environ.get("ORT_INTRA_OP_THREADS", "2"))
if os.environ.get("MODEL_DEVICE") == "cuda":  # what onnxruntime-gpu's install page says to do
    ort.preload_dlls()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
else:
    providers = ["CPUExecutionProvider"]
sess = ort.InferenceSession(os.environ["MODEL_PATH"], opts, providers=providers)


@app.post("/api/mnist/predict")
def predict():
    body = json.loads(request.get_data())
    items = [body["image"]] if "image" in body else body["images"]
    x = (np.asarray(items, dtype=np.float32) / 255.0)[..., None]
    probs = sess.run(["probabilities"], {"image": x})[0]
    out = [{"digit": int(p.argmax()), "confidence": float(p.max()), "probabilities": [float(v) for v in p]}
           for p in probs]
    return Response(json.dumps({"predictions": out}), mimetype="application/json")
