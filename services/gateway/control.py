"""The gateway's own routes (not proxied): liveness, readiness and the model lists gathered from every
backend, server metadata, Prometheus metrics, the OpenAPI document, Swagger UI and the demo page."""
from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path

import orjson

from services import __version__
from services.gateway import openapi
from services.runtime.errors import ApiError
from services.runtime.metrics import exposition

STATIC = Path(__file__).resolve().parent / "static"
SWAGGER_HTML = b"""<!doctype html><html><head><meta charset="utf-8"><title>Model gateway API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head><body><div id="ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script></body></html>"""


ROUTE_FAMILIES = ("POST /api/{mnist/predict,sentiment/predict,translate,generate,gan/sample}, GET /api/models, "
                  "/v1/models/NAME[:predict|/metadata], /v2/models/NAME[/infer|/ready], /v2/health/{live,ready}, "
                  "/healthz, /metrics, /openapi.json, /docs, / (demo page)")


def file_under(root: Path, rel: str) -> Path | None:
    """``root/rel`` when it is a file inside ``root`` (no ``..`` escapes), else None."""
    try:
        p = (root / rel).resolve()
    except (OSError, ValueError):
        return None
    return p if p.is_file() and root.resolve() in p.parents else None


class Control:
    def __init__(self, gateway):
        self.gw = gateway
        self.routes = {("GET", "/healthz"): self.healthz,
                       ("GET", "/v2/health/live"): self.live, ("GET", "/v2/health/ready"): self.ready,
                       ("GET", "/v2"): self.server_meta, ("GET", "/api/models"): self.models,
                       ("POST", "/v2/repository/index"): self.repo_index, ("GET", "/metrics"): self.metrics,
                       ("GET", "/openapi.json"): self.openapi, ("GET", "/docs"): self.docs, ("GET", "/"): self.index}

    async def handle(self, req) -> None:
        method = "GET" if req.method == "HEAD" else req.method
        fn = self.routes.get((method, req.path))
        if fn is None and method == "GET" and (req.path.startswith(("/docs/", "/static/"))
                                               or req.path == "/favicon.ico"):
            fn = self.asset
        if fn is None:
            allowed = sorted(m for m, path in self.routes if path == req.path)
            if allowed:
                req.extra_headers.append((b"allow", ", ".join(allowed).encode()))
                raise ApiError(f"method {req.method} not allowed on {req.path}; use {' or '.join(allowed)}",
                               status=405, limit=allowed)
            raise ApiError(f"no such route: {req.method} {req.path}; routes: {ROUTE_FAMILIES}", status=404)
        await fn(req)

    async def fan_out(self, req, method: str, path: str, timeout: float = 1.0) -> list[tuple[str, int, object]]:
        """The same call to every backend at once -> [(backend, status, JSON body or error)]."""
        headers = [(b"X-Request-ID", req.request_id.encode())]

        async def one(b):
            try:
                r = await self.gw.upstream.request(b, method, path.encode(), headers, b"", timeout=timeout)
                data = await asyncio.wait_for(r.read(), timeout)
                return b.name, r.status, (orjson.loads(data) if data else None)
            except ApiError as exc:
                return b.name, exc.status, {"error": exc.message}
            except orjson.JSONDecodeError:
                return b.name, 502, {"error": "backend answered with invalid JSON"}
            except (TimeoutError, ConnectionError) as exc:
                return b.name, 504, {"error": f"backend failed: {exc or type(exc).__name__}"}
        return list(await asyncio.gather(*(one(b) for b in self.gw.router.backends.values())))

    async def healthz(self, req) -> None:
        """The gateway itself (its probes in Kubernetes): up whatever its backends are doing, so one model's
        crash loop never takes the other models' gateway pods out of their Service."""
        req.route = "health"
        await req.json({"ok": True})

    async def live(self, req) -> None:
        await req.json({"live": True})

    async def ready(self, req) -> None:
        req.route = "health"
        results = await self.fan_out(req, "GET", "/v2/health/ready")
        ok = all(status == 200 for _, status, _ in results)
        await req.json({"ready": ok, "backends": {n: {"ready": s == 200, "status": s} for n, s, _ in results}},
                       200 if ok else 503)

    async def server_meta(self, req) -> None:
        await req.json({"name": "keras-onnx-serving-gateway", "version": __version__,
                        "extensions": ["binary_tensor_data", "model_repository"]})

    async def models(self, req) -> None:
        req.route = "native"
        out, down = [], {}
        for name, status, body in await self.fan_out(req, "GET", "/api/models", timeout=5.0):
            if status == 200 and isinstance(body, dict):
                out.extend(body.get("models", []))
            else:
                down[name] = (body or {}).get("error", f"status {status}") if isinstance(body, dict) else \
                    f"status {status}"
                for m in self.gw.router.backends[name].models:
                    out.append({"name": m, "service": name, "state": "UNAVAILABLE", "error": down[name]})
        await req.json({"models": out, "unavailable_backends": down})

    async def repo_index(self, req) -> None:
        await req.body(self.gw.settings.max_body_bytes)  # an optional {"ready": bool} filter, not needed
        out = []
        for name, status, body in await self.fan_out(req, "POST", "/v2/repository/index", timeout=5.0):
            if status == 200 and isinstance(body, list):
                out.extend(body)
            else:
                out.extend({"name": m, "state": "UNAVAILABLE", "reason": f"backend {name}: status {status}"}
                           for m in self.gw.router.backends[name].models)
        await req.json(out)

    async def metrics(self, req) -> None:
        body, ctype = exposition()
        await req.respond(200, body, [(b"content-type", ctype.encode())])

    async def openapi(self, req) -> None:
        await req.json(openapi.spec())

    async def docs(self, req) -> None:
        await req.respond(200, SWAGGER_HTML, [(b"content-type", b"text/html; charset=utf-8")])

    async def index(self, req) -> None:
        page = STATIC / "index.html"
        if page.exists():
            return await self.send_file(req, page)
        await req.json({"service": "gateway", "docs": "/docs", "openapi": "/openapi.json"})

    async def asset(self, req) -> None:
        if req.path.startswith("/docs/"):
            import swagger_ui_bundle
            p = file_under(Path(swagger_ui_bundle.swagger_ui_path), req.path[len("/docs/"):])
        elif req.path == "/favicon.ico":
            p = STATIC / "favicon.ico"
        else:
            p = file_under(STATIC, req.path[len("/static/"):])
        if p is None:
            raise ApiError(f"no such file: {req.path}", status=404)
        await self.send_file(req, p)

    @staticmethod
    async def send_file(req, path: Path) -> None:
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        await req.respond(200, path.read_bytes(), [(b"content-type", ctype.encode()),
                                                   (b"cache-control", b"no-cache")])
