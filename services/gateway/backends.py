"""The gateway's backend map: which service owns which models and native routes.

Read from the YAML file named by ``GATEWAY_BACKENDS_FILE`` (the Kubernetes ConfigMap mounts one), else the
built-in local map below; ``BACKEND_<NAME>_URL`` overrides one backend's address.
"""
from __future__ import annotations

from dataclasses import dataclass

import yaml

from services.settings import GatewaySettings

DEFAULT = """
backends:
  mnist:       {url: "http://127.0.0.1:9001", models: [mnist], routes: ["/api/mnist/"]}
  sentiment:   {url: "http://127.0.0.1:9002", models: [sentiment], routes: ["/api/sentiment/"]}
  translation: {url: "http://127.0.0.1:9003", models: [translation_transformer, translation_seq2seq], routes: ["/api/translate"]}
  textgen:     {url: "http://127.0.0.1:9004", models: [textgen], routes: ["/api/generate"], streams: true}
  gan:         {url: "http://127.0.0.1:9005", models: [gan], routes: ["/api/gan/"]}
"""


@dataclass(frozen=True)
class Backend:
    name: str
    url: str
    models: tuple[str, ...]
    routes: tuple[str, ...]
    streams: bool = False  # answers may come as a stream (server-sent events)


def load(settings: GatewaySettings) -> dict[str, Backend]:
    path = settings.backends_file
    text = open(path, encoding="utf-8").read() if path else DEFAULT
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict) or not isinstance(raw.get("backends"), dict):
        raise ValueError(f"backend map {path or '(built-in)'} needs a 'backends' mapping")
    out = {}
    for name, spec in raw["backends"].items():
        url = dict(settings.backend_urls).get(name, spec["url"]).rstrip("/")
        out[name] = Backend(name, url, tuple(spec.get("models", [])), tuple(spec.get("routes", [])),
                            bool(spec.get("streams", False)))
    return out


class Router:
    def __init__(self, backends: dict[str, Backend]):
        self.backends = backends
        self.by_model = {m: b for b in backends.values() for m in b.models}
        self.prefixes = sorted(((r, b) for b in backends.values() for r in b.routes), key=lambda x: -len(x[0]))

    def native(self, path: str) -> Backend | None:
        for prefix, b in self.prefixes:
            if path == prefix.rstrip("/") or path.startswith(prefix):
                return b
        return None

    def model(self, name: str) -> Backend | None:
        return self.by_model.get(name)
