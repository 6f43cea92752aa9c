"""The services and the models each one serves, written once: the stack, the gateway's built-in backend map,
the OpenAPI document, k8s/generate.py and the tests all read this table."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    models: tuple[str, ...]
    routes: tuple[str, ...]  # native routes the gateway sends here (a prefix when it ends in /)


SERVICES = (
    Service("mnist", 9001, ("mnist",), ("/api/mnist/",)),
    Service("sentiment", 9002, ("sentiment",), ("/api/sentiment/",)),
    Service("translation", 9003, ("translation_transformer", "translation_seq2seq"), ("/api/translate",)),
    Service("textgen", 9004, ("textgen",), ("/api/generate", "/v1/completions", "/v1/models")),  # + OpenAI's API
    Service("gan", 9005, ("gan",), ("/api/gan/",)),
)
GATEWAY_PORT = 8080
GRPC_PORTS = {"grpc-tfs": 8500, "grpc-v2": 8001}  # on the gateway: TF Serving's and the v2 protocol's gRPC APIs
MODELS = tuple(m for s in SERVICES for m in s.models)
