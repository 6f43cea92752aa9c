"""Ray Serve's model multiplexing, as its docs write it, over the same zoo: a deployment of ``REPLICAS``
replicas whose ``@serve.multiplexed`` loader opens an ONNX Runtime session of ``REPOSITORY/MODEL/1/model.onnx``
(our session options: services/runtime/sessions.py), keeping ``MODELS_PER_REPLICA`` per replica and dropping the
least recently used. The client names the model in the path and in the ``serve_multiplexed_model_id`` header,
which Ray's proxy routes on (to a replica that holds it, when one does). It answers our v2 JSON.

PORT, REPOSITORY, REPLICAS, MODELS_PER_REPLICA, STATS_DIR, ORT_INTRA_OP_THREADS from the environment. Each
replica writes how many loads it made to ``STATS_DIR/PID.json``, for the hit ratio."""

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import ray
from fastapi import FastAPI, Request
from ray import serve

REPOSITORY = Path(os.environ["REPOSITORY"])
STATS_DIR = Path(os.environ["STATS_DIR"])
app = FastAPI()


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("ORT_INTRA_OP_THREADS", "1"))
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@serve.deployment(num_replicas=int(os.environ.get("REPLICAS", "2")), max_ongoing_requests=64)
@serve.ingress(app)
class Zoo:
    def __init__(self):
        self.loads = 0

    @serve.multiplexed(max_num_models_per_replica=int(os.environ["MODELS_PER_REPLICA"]))
    async def get_model(self, model_id: str) -> ort.InferenceSession:
        s = session(REPOSITORY / model_id / "1" / "model.onnx")
        self.loads += 1
        (STATS_DIR / f"{os.getpid()}.json").write_text(json.dumps({"loads": self.loads}))
        return s

    @app.get("/v2/health/ready")
    async def ready(self) -> dict:
        return {"ready": True}

    @app.post("/v2/models/{model}/infer")
    async def infer(self, model: str, request: Request) -> dict:
        s = await self.get_model(model)
        body = await request.json()
        inputs = {t["name"]: np.asarray(t["data"], np.float32).reshape(t["shape"]) for t in body["inputs"]}
        outputs = s.run(None, inputs)
        return {"model_name": model, "outputs": [
            {"name": o.name, "datatype": "FP32", "shape": list(v.shape), "data": v.reshape(-1).tolist()}
            for o, v in zip(s.get_outputs(), outputs, strict=True)]}


if __name__ == "__main__":
    ray.init(include_dashboard=False, num_cpus=os.cpu_count(), log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": int(os.environ["PORT"])})
    serve.run(Zoo.bind(), route_prefix="/", blocking=True)
