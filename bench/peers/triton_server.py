"""Triton as a user runs it from PyPI: PyTriton (tritonserver's C++ HTTP/gRPC front end and dynamic batcher, with
its Python backend) in front of an ONNX Runtime session of the same MNIST graph with the same session options
as ours (services/runtime/sessions.py), batching as the manifest does: up to 64 rows, 2 ms queue delay.

PORT, GRPC_PORT, METRICS_PORT, MODEL_PATH, ORT_INTRA_OP_THREADS from the environment. Triton's Python backend
stub links libpython by name: ``bench.peer_envs`` puts this interpreter's library folder first on
LD_LIBRARY_PATH, else it picks the system's and fails (``'_thread.RLock' object has no attribute
'_recursion_count'``)."""
from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

opts = ort.SessionOptions()
opts.intra_op_num_threads = int(os.environ.get("ORT_INTRA_OP_THREADS", "2"))
opts.inter_op_num_threads = 1
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
session = ort.InferenceSession(os.environ["MODEL_PATH"], opts, providers=["CPUExecutionProvider"])


@batch
def infer(image: np.ndarray) -> dict:
    probabilities, logits = session.run(["probabilities", "logits"], {"image": image})
    return {"probabilities": probabilities, "logits": logits}


config = TritonConfig(http_port=int(os.environ["PORT"]), grpc_port=int(os.environ["GRPC_PORT"]),
                      metrics_port=int(os.environ["METRICS_PORT"]), http_address="127.0.0.1",
                      grpc_address="127.0.0.1")
with Triton(config=config) as triton:
    triton.bind(model_name="mnist", infer_func=infer,
                inputs=[Tensor(name="image", dtype=np.float32, shape=(28, 28, 1))],
                outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(10,)),
                         Tensor(name="logits", dtype=np.float32, shape=(10,))],
                config=ModelConfig(max_batch_size=64, batcher=DynamicBatcher(max_queue_delay_microseconds=2000)))
    triton.serve()
