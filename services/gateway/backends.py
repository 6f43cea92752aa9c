"""The gateway's backend map: which service owns which models and native routes. The backend marked
``imported`` (the models service) gets every model no backend names: users' models need no entry here.

Read from the YAML file named by ``GATEWAY_BACKENDS_FILE`` (the Kubernetes ConfigMap mounts one), else built
from the service table (``services/catalog.py``) on 127.0.0.1; ``BACKEND_<NAME>_URL`` overrides one backend's
address.
"""
from __future__ import annotations

from dataclasses import dataclass

import yaml  # type: ignore[import-untyped]  # no stubs without types-PyYAML

from services import catalog
from services.settings import GatewaySettings


def backend_map(host_of=lambda s: f"127.0.0.1:{s.port}") -> dict:
    """The map as the YAML file holds it, from the service table (``host_of``: a service's host:port)."""
    return {"backends": {s.name: {"url": f"http://{host_of(s)}", "models": list(s.models), "routes": list(s.paths),
                                  **({"imported": True} if s.imported else {})} for s in catalog.SERVICES}}


@dataclass(frozen=True)
class Backend:
    name: str
    url: str
    models: tuple[str, ...]
    routes: tuple[str, ...]
    imported: bool = False  # also serves every model no backend names (the imported models)


def load(settings: GatewaySettings) -> dict[str, Backend]:
    path = settings.backends_file
    raw = yaml.safe_load(open(path, encoding="utf-8").read()) if path else backend_map()
    if not isinstance(raw, dict) or not isinstance(raw.get("backends"), dict):
        raise ValueError(f"backend map {path or '(built-in)'} needs a 'backends' mapping")
    out, urls = {}, dict(settings.backend_urls)
    for name, spec in raw["backends"].items():
        url = urls.get(name, spec["url"]).rstrip("/")
        out[name] = Backend(name, url, tuple(spec.get("models", [])), tuple(spec.get("routes", [])),
                            bool(spec.get("imported", False)))
    return out


class Router:
    def __init__(self, backends: dict[str, Backend]):
        self.backends = backends
        self.by_model = {m: b for b in backends.values() for m in b.models}
        # a model no backend names goes to the imported models' backend, which knows its repository's (or 404s)
        self.imported = next((b for b in backends.values() if b.imported), None)
        self.prefixes = sorted(((r, b) for b in backends.values() for r in b.routes), key=lambda x: -len(x[0]))

    def native(self, path: str) -> Backend | None:
        for prefix, b in self.prefixes:
            if path == prefix.rstrip("/") or (prefix.endswith("/") and path.startswith(prefix)):
                return b
        return None

    def model(self, name: str) -> Backend | None:
        return self.by_model.get(name, self.imported)
