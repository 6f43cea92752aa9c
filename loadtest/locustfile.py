"""Locust scenarios for every model and protocol with realistic payloads (real held-out digits, IMDB reviews, English
sentences, prompts from ``payloads.json``; each imported model's own stored sample). Tags select subsets (``--tags
mnist v2``), weights mimic a mixed workload. Against any deployment: ``locust -f loadtest/locustfile.py --host
https://your-gateway``; set ``API_KEY`` to send ``Authorization: Bearer``. ``GrpcUser`` calls the v2 protocol over
gRPC with tritonclient (``GRPC_V2_TARGET``, default the host's name on port 8001)."""
from __future__ import annotations

import base64
import json
import os
import random
import time
from pathlib import Path
from urllib.parse import urlsplit

import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import FastHttpUser, User, between, tag, task

grpc_gevent.init_gevent()  # grpcio's calls must yield to Locust's gevent loop

P = json.loads((Path(__file__).parent / "payloads.json").read_text())


class ModelUser(FastHttpUser):
    wait_time = between(0.05, 0.3)
    weight = 4

    def on_start(self):
        key = os.environ.get("API_KEY")
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        # the imported models of this deployment (python -m training import), each with its stored sample
        models = self.client.get("/api/models", headers=self.headers, name="/api/models").json().get("models", [])
        self.imported = {m["name"]: m["example"] for m in models
                         if m.get("service") == "models" and m.get("state") == "AVAILABLE" and "example" in m}

    def post(self, path, body, name=None):
        with self.client.post(path, data=json.dumps(body), headers=self.headers, name=name or path,
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
            return r

    # ------------------------------------------------------------------ native API
    @tag("mnist", "native")
    @task(10)
    def mnist_native(self):
        d = random.choice(P["digits"])
        self.post("/api/mnist/predict", {"image": d["grid"]})

    @tag("mnist", "native")
    @task(2)
    def mnist_batch(self):
        self.post("/api/mnist/predict", {"images": [d["grid"] for d in random.sample(P["digits"], 8)]},
                  name="/api/mnist/predict [batch 8]")

    @tag("sentiment", "native")
    @task(8)
    def sentiment_native(self):
        self.post("/api/sentiment/predict", {"text": random.choice(P["reviews"])["text"]})

    @tag("translation", "native")
    @task(4)
    def translate_greedy(self):
        self.post("/api/translate", {"text": random.choice(P["sentences"])}, name="/api/translate [greedy]")

    @tag("translation", "native")
    @task(2)
    def translate_beam(self):
        self.post("/api/translate", {"text": random.choice(P["sentences"]), "beam_size": 4, "model": "seq2seq"},
                  name="/api/translate [seq2seq beam 4]")

    @tag("textgen", "native")
    @task(3)
    def generate(self):
        self.post("/api/generate", {"prompt": random.choice(P["prompts"]), "max_tokens": 100, "temperature": 0.7,
                                    "seed": random.randrange(1 << 30)})

    @tag("textgen", "native", "stream")
    @task(2)
    def generate_stream(self):
        body = {"prompt": random.choice(P["prompts"]), "max_tokens": 100, "stream": True}
        with self.client.post("/api/generate", data=json.dumps(body), headers=self.headers,
                              name="/api/generate [stream]", catch_response=True) as r:
            if r.status_code != 200 or b"event: done" not in r.content:
                r.failure(f"stream incomplete ({r.status_code})")

    @tag("gan", "native")
    @task(3)
    def gan(self):
        self.post("/api/gan/sample", {"n": 16, "seed": random.randrange(1 << 30), "format": "png"},
                  name="/api/gan/sample [png 16]")

    # ------------------------------------------------------------------ TF Serving REST
    @tag("mnist", "v1")
    @task(3)
    def mnist_v1(self):
        g = random.choice(P["digits"])["grid"]
        self.post("/v1/models/mnist:predict", {"instances": [[[[v / 255.0] for v in row] for row in g]]})

    @tag("sentiment", "v1")
    @task(2)
    def sentiment_v1(self):
        t = random.choice(P["reviews"])["text"]
        self.post("/v1/models/sentiment:predict", {"instances": [{"b64": base64.b64encode(t.encode()).decode()}]})

    # ------------------------------------------------------------------ Open Inference Protocol v2
    @tag("mnist", "v2")
    @task(3)
    def mnist_v2(self):
        g = random.choice(P["digits"])["grid"]
        self.post("/v2/models/mnist/infer", {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 1],
                                                         "data": [v / 255.0 for row in g for v in row]}]})

    @tag("translation", "v2")
    @task(1)
    def translation_v2(self):
        self.post("/v2/models/translation_transformer/infer",
                  {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                               "data": [random.choice(P["sentences"])]}],
                   "parameters": {"beam_size": 2}})

    @tag("gan", "v2")
    @task(1)
    def gan_v2(self):
        self.post("/v2/models/gan/infer", {"inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, 100],
                                                       "data": [random.gauss(0, 1) for _ in range(100)]}]})

    @tag("imported", "v2")
    @task(3)
    def imported_v2(self):
        if self.imported:  # your own models, each sent the sample it was imported with
            name = random.choice(sorted(self.imported))
            self.post(f"/v2/models/{name}/infer", self.imported[name], name="/v2/models/[imported]/infer")

    @tag("health")
    @task(1)
    def ready(self):
        self.client.get("/v2/health/ready", name="/v2/health/ready")


class GrpcUser(User):
    """The v2 protocol over gRPC, as Triton's own clients call it."""
    wait_time = between(0.05, 0.3)
    weight = 1

    def on_start(self):
        import tritonclient.grpc as grpcclient
        self.lib = grpcclient
        target = os.environ.get("GRPC_V2_TARGET") or f"{urlsplit(self.host).hostname}:8001"
        self.client = grpcclient.InferenceServerClient(target)
        key = os.environ.get("API_KEY")
        self.headers = {"authorization": f"Bearer {key}"} if key else None

    def on_stop(self):
        self.client.close()

    def infer(self, name: str, model: str, inputs: list, **kw) -> None:
        tensors = []
        for tensor, datatype, arr in inputs:
            t = self.lib.InferInput(tensor, list(arr.shape), datatype)
            t.set_data_from_numpy(arr)
            tensors.append(t)
        t0, error = time.perf_counter(), None
        try:
            self.client.infer(model, tensors, headers=self.headers, **kw)
        except Exception as exc:  # noqa: BLE001 - reported to Locust as this call's failure
            error = exc
        self.environment.events.request.fire(request_type="grpc", name=name, response_length=0, exception=error,
                                             response_time=(time.perf_counter() - t0) * 1000, context={})

    @tag("mnist", "grpc")
    @task(3)
    def mnist_grpc(self):
        g = np.asarray(random.choice(P["digits"])["grid"], np.float32) / 255.0
        self.infer("grpc mnist", "mnist", [("image", "FP32", g.reshape(1, 28, 28, 1))])

    @tag("sentiment", "grpc")
    @task(2)
    def sentiment_grpc(self):
        text = np.array([random.choice(P["reviews"])["text"].encode()], dtype=object)
        self.infer("grpc sentiment", "sentiment", [("text", "BYTES", text)])

    @tag("translation", "grpc")
    @task(1)
    def translation_grpc(self):
        text = np.array([random.choice(P["sentences"]).encode()], dtype=object)
        self.infer("grpc translation", "translation_transformer", [("text", "BYTES", text)],
                   parameters={"beam_size": 2})
