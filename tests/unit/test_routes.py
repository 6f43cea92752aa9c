"""Each service declares its own routes once (``services/NAME/routes.py``): every declaration is served by its
service, its example answers, and the catalog, the gateway's routing, its OpenAPI document and its 404 hints are
derived from the same declarations."""
from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from services import catalog
from services.gateway import backends, control, openapi
from services.runtime.config import LIMITS


@pytest.mark.parametrize("path", list(catalog.ROUTES))
def test_every_declared_route_is_served_and_its_example_answers(clients, path):
    route = catalog.ROUTES[path]
    service = next(s for s in catalog.SERVICES if path in s.paths)
    if route.method == "POST":
        schema = route.schema(LIMITS)
        Draft202012Validator.check_schema(schema)
        Draft202012Validator(schema).validate(route.example)
        r = clients[service.name].post(path, json=route.example)
    else:
        r = clients[service.name].open(path, method=route.method)
    assert r.status_code == 200, (path, r.data[:300])


def test_the_gateway_routes_documents_and_lists_what_the_services_declare():
    router = backends.Router(backends.load(backends.GatewaySettings()))
    doc = openapi.spec()
    for service in catalog.SERVICES:
        for route in service.routes:
            assert router.native(route.path).name == service.name
            op = doc["paths"][route.path][route.method.lower()]
            assert op["summary"] == route.summary and op["tags"] == [route.tag]
            if route.method == "POST":
                body = op["requestBody"]["content"]["application/json"]
                assert body["schema"] == route.schema(LIMITS) and body["example"] == route.example
            assert f"{route.method} {route.path}" in control.ROUTE_FAMILIES


def test_a_declared_knob_is_one_schema_for_the_native_route_and_the_v1_v2_parameters(clients):
    """The translator's beam size: the same limit refused the same way on /api/translate and as a v2 parameter."""
    c = clients["translation"]
    native = c.post("/api/translate", json={"text": "Hi.", "beam_size": LIMITS["max_beam_size"] + 1}).json
    v2 = c.post("/v2/models/translation_transformer/infer", json={
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["Hi."]}],
        "parameters": {"beam_size": LIMITS["max_beam_size"] + 1}}).json
    assert native["field"] == v2["field"] == "beam_size"
    assert native["limit"] == v2["limit"] == [1, LIMITS["max_beam_size"]]
    meta = c.get("/v2/models/translation_transformer").json["parameters"]["request_parameters"]
    assert meta["beam_size"]["maximum"] == LIMITS["max_beam_size"]
