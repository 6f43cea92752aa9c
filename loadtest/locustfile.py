"""Locust scenarios for every model and protocol with realistic payloads (real held-out digits, IMDB reviews,
English sentences, prompts from ``payloads.json``). Tags select subsets (``--tags mnist v2``), weights mimic
a mixed workload. Against any deployment: ``locust -f loadtest/locustfile.py --host https://your-gateway``;
set ``API_KEY`` to send ``Authorization: Bearer``."""
from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path

from locust import FastHttpUser, between, tag, task

P = json.loads((Path(__file__).parent / "payloads.json").read_text())


class ModelUser(FastHttpUser):
    wait_time = between(0.05, 0.3)

    def on_start(self):
        key = os.environ.get("API_KEY")
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

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
                  {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [random.choice(P["sentences"])]}],
                   "parameters": {"beam_size": 2}})

    @tag("gan", "v2")
    @task(1)
    def gan_v2(self):
        self.post("/v2/models/gan/infer", {"inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, 100],
                                                       "data": [random.gauss(0, 1) for _ in range(100)]}]})

    @tag("health")
    @task(1)
    def ready(self):
        self.client.get("/v2/health/ready", name="/v2/health/ready")
