"""The gateway's own routes (not proxied), on Starlette's routing: its own health, readiness and the model lists
gathered from every backend, server metadata, Prometheus metrics, the OpenAPI document, Swagger UI and the demo
page. Errors are JSON like everywhere else: 404 lists the route families, 405 the allowed methods."""
from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import swagger_ui_bundle
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services import V2_EXTENSIONS, __version__, catalog
from services.gateway import openapi
from services.runtime.errors import ApiError
from services.runtime.metrics import exposition

STATIC = Path(__file__).resolve().parent / "static"
SWAGGER_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Model gateway API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head><body><div id="ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script></body></html>"""
# what a 404 lists: the services' own routes (their declarations), then what every model and the gateway answer
ROUTE_FAMILIES = ", ".join([f"{r.method} {path}" for path, r in catalog.ROUTES.items()] + [
    "GET /api/models", "/v1/models/NAME[:predict|/metadata]",
    "/v2/models/NAME[/infer|/generate|/generate_stream|/ready|/stats]",
    "/v2/models/stats", "/v2/repository/{index,models/NAME/load,models/NAME/unload}", "/v2/health/{live,ready}",
    "/healthz", "/metrics", "/openapi.json", "/docs", "/ (demo page)"])


def json_response(obj, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status, media_type="application/json")


class Control:
    def __init__(self, gateway):
        self.gw = gateway
        routes = [Route("/healthz", self.healthz), Route("/v2/health/live", self.live),
                  Route("/v2/health/ready", self.ready), Route("/v2", self.server_meta),
                  Route("/api/models", self.models), Route("/v2/repository/index", self.repo_index, methods=["POST"]),
                  Route("/v2/models/stats", self.stats),
                  Route("/metrics", self.metrics), Route("/openapi.json", self.openapi),
                  Route("/docs", self.docs), Route("/", self.index),
                  Route("/favicon.ico", lambda _: FileResponse(STATIC / "favicon.ico")),
                  Mount("/docs", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path)),
                  Mount("/static", StaticFiles(directory=STATIC))]
        self.app = Starlette(routes=routes, exception_handlers={HTTPException: self.http_error,
                                                                ApiError: self.api_error})

    @staticmethod
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            allowed = sorted(set((exc.headers or {}).get("Allow", "").split(", ")) - {"HEAD", ""})
            body = {"error": f"method {request.method} not allowed on {request.url.path}; use "
                             f"{' or '.join(allowed)}", "limit": allowed}
            return Response(orjson.dumps(body), 405, headers={"Allow": ", ".join(allowed)},
                            media_type="application/json")
        if exc.status_code == 404:
            return json_response({"error": f"no such route: {request.method} {request.url.path}; routes: "
                                           f"{ROUTE_FAMILIES}"}, 404)
        return json_response({"error": exc.detail}, exc.status_code)

    @staticmethod
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return json_response(exc.body(), exc.status)

    async def call(self, request: Request, backend, method: str, path: str, timeout: float = 1.0,
                   body: bytes = b"") -> tuple[str, int, object]:
        """One call to a backend, with this request's id -> (backend, status, JSON body or error)."""
        headers = [(b"X-Request-ID", request.scope["gateway.request"].request_id.encode())]
        try:
            r = await self.gw.upstream.request(backend, method, path.encode(), headers, body, timeout=timeout)
            data = await asyncio.wait_for(r.read(), timeout)
            return backend.name, r.status, (orjson.loads(data) if data else None)
        except ApiError as exc:
            return backend.name, exc.status, {"error": exc.message}
        except orjson.JSONDecodeError:
            return backend.name, 502, {"error": "backend answered with invalid JSON"}
        except (TimeoutError, ConnectionError) as exc:
            return backend.name, 504, {"error": f"backend failed: {exc or type(exc).__name__}"}

    async def fan_out(self, request: Request, method: str, path: str, timeout: float = 1.0,
                      body: bytes = b"") -> list[tuple[str, int, object]]:
        """The same call to every backend at once -> [(backend, status, JSON body or error)]."""
        return list(await asyncio.gather(*(self.call(request, b, method, path, timeout, body)
                                           for b in self.gw.router.backends.values())))

    async def healthz(self, request: Request) -> Response:
        """The gateway itself (its probes in Kubernetes): up whatever its backends are doing, so one model's
        crash loop never takes the other models' gateway pods out of their Service."""
        request.scope["gateway.request"].route = "health"
        return json_response({"ok": True})

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        request.scope["gateway.request"].route = "health"
        results = await self.fan_out(request, "GET", "/v2/health/ready")
        ok = all(status == 200 for _, status, _ in results)
        return json_response({"ready": ok, "backends": {n: {"ready": s == 200, "status": s} for n, s, _ in results}},
                             200 if ok else 503)

    async def server_meta(self, request: Request) -> Response:
        return json_response({"name": "keras-onnx-serving-gateway", "version": __version__,
                              "extensions": V2_EXTENSIONS})

    async def models(self, request: Request) -> Response:
        request.scope["gateway.request"].route = "native"
        out, down = [], {}
        for name, status, body in await self.fan_out(request, "GET", "/api/models", timeout=5.0):
            if status == 200 and isinstance(body, dict):
                out.extend(body.get("models", []))
            else:
                down[name] = (body or {}).get("error", f"status {status}") if isinstance(body, dict) else \
                    f"status {status}"
                for m in self.gw.router.backends[name].models:
                    out.append({"name": m, "service": name, "state": "UNAVAILABLE", "error": down[name]})
        return json_response({"models": out, "unavailable_backends": down})

    async def repo_index(self, request: Request) -> Response:
        sent = await request.scope["gateway.request"].body(self.gw.settings.max_body_bytes)  # {"ready": true}
        out = []
        for name, status, body in await self.fan_out(request, "POST", "/v2/repository/index", timeout=5.0,
                                                     body=sent):
            if status == 400 and isinstance(body, dict):
                raise ApiError(body.get("error", "bad request"), field=body.get("field"), limit=body.get("limit"))
            if status == 200 and isinstance(body, list):
                out.extend(body)
            else:
                out.extend({"name": m, "state": "UNAVAILABLE", "reason": f"backend {name}: status {status}"}
                           for m in self.gw.router.backends[name].models)
        return json_response(out)

    async def stats(self, request: Request) -> Response:
        """Triton's statistics of every model, from the backends that own them."""
        out, down = [], []
        for name, status, body in await self.fan_out(request, "GET", "/v2/models/stats", timeout=5.0):
            if status == 200 and isinstance(body, dict):
                out.extend(body.get("model_stats", []))
            else:
                down.append(name)
        if down:
            raise ApiError(f"statistics unavailable from backend(s) {', '.join(down)}", status=503)
        return json_response({"model_stats": out})

    async def metrics(self, request: Request) -> Response:
        body, ctype = exposition()
        return Response(body, 200, headers={"Content-Type": ctype})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi.spec(await self.imported_models(request)))

    async def imported_models(self, request: Request) -> list[dict]:
        """The imported models loaded now, from the imported models' backend (none when it is down: the document
        still describes everything else)."""
        backend = self.gw.router.imported
        if backend is None:
            return []
        _, status, body = await self.call(request, backend, "GET", "/api/models", timeout=2.0)
        if status != 200 or not isinstance(body, dict):
            return []
        newest: dict[str, dict] = {}  # the entries come newest version first
        for m in body.get("models", []):
            if m.get("state") == "AVAILABLE" and "example" in m:
                newest.setdefault(m["name"], m)
        return list(newest.values())

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(SWAGGER_HTML)

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
