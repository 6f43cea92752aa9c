"""The bad-input matrix: for every model, every protocol (native, TF Serving REST, OIP v2 JSON and binary) and
the paths themselves, requests a careless or hostile client could send. Each must get a 4xx JSON error with an
``error`` string (plus ``field`` on the native API), never a 5xx, and the service must keep answering."""
from __future__ import annotations

import json

import orjson
import pytest

# model -> (service, v2 input name, datatype, one good item's shape, one good item's flat data)
MODELS = {
    "mnist": ("mnist", "image", "FP32", [28, 28, 1], [0.0] * 784),
    "sentiment": ("sentiment", "text", "BYTES", [], ["A fine film."]),
    "translation_transformer": ("translation", "text", "BYTES", [], ["Good morning."]),
    "translation_seq2seq": ("translation", "text", "BYTES", [], ["Good morning."]),
    "textgen": ("textgen", "prompt", "BYTES", [], ["ROMEO:"]),
    "gan": ("gan", "latent", "FP32", [100], [0.0] * 100),
}


def v2_cases(model):
    _, name, dt, shape, data = MODELS[model]
    good = {"name": name, "datatype": dt, "shape": [1, *shape], "data": data}
    other_dt = "INT64" if dt == "FP32" else "FP32"
    return {
        "not json": b"{not json",
        "json array": b"[1, 2]",
        "json string": b'"inputs"',
        "empty object": {},
        "inputs not a list": {"inputs": 5},
        "inputs empty": {"inputs": []},
        "input not an object": {"inputs": [5]},
        "missing name": {"inputs": [{k: v for k, v in good.items() if k != "name"}]},
        "missing datatype": {"inputs": [{k: v for k, v in good.items() if k != "datatype"}]},
        "missing shape": {"inputs": [{k: v for k, v in good.items() if k != "shape"}]},
        "missing data": {"inputs": [{k: v for k, v in good.items() if k != "data"}]},
        "unknown input name": {"inputs": [{**good, "name": "nope"}]},
        "unicode input name": {"inputs": [{**good, "name": "im\u202eage\u0000"}]},
        "unknown datatype": {"inputs": [{**good, "datatype": "FP99"}]},
        "wrong datatype": {"inputs": [{**good, "datatype": other_dt}]},
        "shape not a list": {"inputs": [{**good, "shape": "1"}]},
        "negative shape": {"inputs": [{**good, "shape": [-1, *shape]}]},
        "shape/data mismatch": {"inputs": [{**good, "shape": [2, *shape]}]},
        "huge batch": {"inputs": [{**good, "shape": [10**9, *shape]}]},
        "empty batch": {"inputs": [{**good, "shape": [0, *shape], "data": []}]},
        "wrong item shape": {"inputs": [{**good, "shape": [1, *([s + 1 for s in shape] or [2])],
                                         "data": data * 2}]},
        "wrong element type": {"inputs": [{**good, "data": ["x"] * len(data) if dt == "FP32" else [5]}]},
        "NaN": {"inputs": [{**good, "data": ["NaN"] * len(data)}]} if dt == "FP32" else
               {"inputs": [{**good, "data": [None]}]},
        "duplicate input": {"inputs": [good, good]},
        "unknown output": {"inputs": [good], "outputs": [{"name": "nope"}]},
        "outputs not a list": {"inputs": [good], "outputs": 3},
        "parameters not an object": {"inputs": [good], "parameters": [1]},
    }


def post(client, path, body, **kw):
    return client.post(path, data=body if isinstance(body, bytes) else orjson.dumps(body), **kw)


def assert_clean_4xx(r, case):
    assert 400 <= r.status_code < 500, f"{case}: {r.status_code} {r.data[:300]!r}"
    body = json.loads(r.data)
    assert isinstance(body.get("error"), str) and body["error"], f"{case}: {body}"
    return body


@pytest.mark.parametrize("model", list(MODELS))
def test_v2_json_matrix(clients, model):
    c = clients[MODELS[model][0]]
    for case, body in v2_cases(model).items():
        assert_clean_4xx(post(c, f"/v2/models/{model}/infer", body), f"v2 {model} {case}")
    assert c.get(f"/v2/models/{model}/ready").status_code == 200


@pytest.mark.parametrize("model", list(MODELS))
def test_v2_binary_extension_matrix(clients, model):
    _, name, dt, shape, data = MODELS[model]
    c = clients[MODELS[model][0]]
    raw = (b"\x00" * 4 * len(data)) if dt == "FP32" else b"".join(
        len(s.encode()).to_bytes(4, "little") + s.encode() for s in data)
    head = orjson.dumps({"inputs": [{"name": name, "datatype": dt, "shape": [1, *shape],
                                     "parameters": {"binary_data_size": len(raw)}}]})
    cases = {
        "header length not a number": (head + raw, "abc"),
        "header length negative": (head + raw, "-5"),
        "header length past the body": (head + raw, str(len(head) + len(raw) + 10)),
        "header length cuts the JSON": (head + raw, str(len(head) - 3)),
        "binary_data_size past the body": (head.replace(str(len(raw)).encode(), str(len(raw) + 99).encode()) + raw,
                                           str(len(head))),
        "trailing bytes nobody claims": (head + raw + b"extra", str(len(head))),
        "BYTES element length past the end": (
            head + (b"\xff\xff\x00\x00" + raw[4:] if dt == "BYTES" else raw[:-4]), str(len(head))),
    }
    for case, (body, hlen) in cases.items():
        r = c.post(f"/v2/models/{model}/infer", data=body,
                   headers={"Inference-Header-Content-Length": hlen, "Content-Type": "application/octet-stream"})
        assert_clean_4xx(r, f"binary {model} {case}")
    assert c.get(f"/v2/models/{model}/ready").status_code == 200


@pytest.mark.parametrize("model", list(MODELS))
def test_tf_serving_rest_matrix(clients, model):
    _, name, dt, shape, data = MODELS[model]
    c = clients[MODELS[model][0]]
    item = data[0] if dt == "BYTES" else [0.0] * 100 if model == "gan" else [[[0.0]] * 28] * 28
    cases = {
        "not json": b"{oops",
        "neither instances nor inputs": {"signature_name": "serving_default"},
        "both instances and inputs": {"instances": [item], "inputs": [item]},
        "instances not a list": {"instances": item if dt == "BYTES" else 5},
        "instances empty": {"instances": []},
        "ragged instances": {"instances": [item, [1.0]] if dt == "FP32" else [item, ["a", "b"]]},
        "wrong type": {"instances": [{"b64": "A"} if dt == "FP32" else 3.5]},
        "invalid b64": {"instances": [{"b64": "***not base64***"}]},
        "NaN": b'{"instances": [NaN]}',
        "unknown named input": {"instances": [{"nope": item}]},
        "inputs wrong name": {"inputs": {"nope": [item]}},
        "unknown signature": {"signature_name": "nope", "instances": [item]},
    }
    for case, body in cases.items():
        assert_clean_4xx(post(c, f"/v1/models/{model}:predict", body), f"v1 {model} {case}")
    assert_clean_4xx(post(c, f"/v1/models/{model}:classify", {"instances": [item]}), f"v1 {model} :classify")
    assert_clean_4xx(post(c, f"/v1/models/{model}/versions/0:predict", {"instances": [item]}), "version 0")
    assert c.get(f"/v1/models/{model}").status_code == 200


NATIVE = {
    "mnist": ("/api/mnist/predict", [{"images": "x"}, {"image": None}, {"image": [[float("nan")] * 28] * 28},
                                     {"image": "\u00e9\u00e9\u00e9"}, {"images": [[[0] * 28] * 28] * 10**4}]),
    "sentiment": ("/api/sentiment/predict", [{"texts": []}, {"texts": "a"}, {"text": None}, {"texts": [1]},
                                             {"text": "x" * 10**6}, {"texts": ["ok"] * 10**4}]),
    "translation": ("/api/translate", [{"text": "Hi.", "model": "nope"}, {"text": "Hi.", "beam_size": 10**6},
                                       {"text": "Hi.", "max_length": -1}, {"text": "Hi.", "beam_size": "4"},
                                       {"texts": ["Hi."] * 10**4}, {"text": "\ud800"}, {"text": "x " * 10**5}]),
    "textgen": ("/api/generate", [{"prompt": "a", "max_tokens": 10**9}, {"prompt": "a", "top_p": 1.5},
                                  {"prompt": "a", "top_k": -1}, {"prompt": "a", "seed": -1},
                                  {"prompt": "a", "seed": 2**80}, {"prompt": "a", "temperature": "hot"},
                                  {"prompt": "a", "stream": "yes"}, {"prompt": "a", "stop": 5},
                                  {"prompt": "x" * 10**6}, {"prompt": "a", "temperature": float("inf")}]),
    "gan": ("/api/gan/sample", [{"n": 10**6}, {"n": -1}, {"latent": [[0.0] * 99]}, {"latent": "x"},
                                {"interpolate": {"from_seed": 1}}, {"interpolate": {"from_seed": 1, "to_seed": 2,
                                                                                    "steps": 10**5}},
                                {"format": "gif"}, {"n": 1.5}]),
}


@pytest.mark.parametrize("svc", list(NATIVE))
def test_native_api_matrix(clients, svc):
    path, bodies = NATIVE[svc]
    c = clients[svc]
    generic = [b"", b"{", b"null", b"[]", b'"text"', b"\xff\xfe\x00garbage"]
    if svc not in ("textgen", "gan"):  # every field of those two has a default
        generic.append({"unexpected": 1})
    for body in generic + bodies:
        raw = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
        r = c.post(path, data=raw, content_type="application/json")
        b = assert_clean_4xx(r, f"native {svc} {raw[:60]!r}")
        assert b.get("field"), f"native {svc} {raw[:60]!r}: no field in {b}"
    assert c.get("/v2/health/ready").status_code == 200


PATHS = ["/v2/models/../../etc/passwd/infer", "/v2/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd/infer",
         "/v2/models/mnist/versions/abc/infer", "/v2/models/mnist/versions/-1/infer",
         "/v2/models/mnist/versions/99999999999999999999999/infer", "/v2/models/MNIST/infer",
         "/v2/models/mn\u0131st/infer", "/v2/models/%00/infer", "/v1/models/mnist/versions/x:predict",
         "/v1/models/..%2Fmnist:predict", "/v1/models/mnist:nope"]


def test_path_tricks_are_4xx_json(clients):
    c = clients["mnist"]
    for path in PATHS:
        assert_clean_4xx(c.post(path, data=b"{}"), path)
    assert c.get("/v2/health/ready").status_code == 200


def test_knobs_at_their_limits_are_served(clients):
    """The largest allowed values are answered, not failed: a degenerate input decoded to the longest allowed
    translation must stay inside the transformer's learned position table."""
    from services.runtime.config import LIMITS
    c = clients["translation"]
    for model in ("transformer", "seq2seq"):
        for beam in (1, 4):
            r = post(c, "/api/translate", {"text": "so " * 40, "model": model, "beam_size": beam,
                                           "max_length": LIMITS["max_translation_tokens"]})
            assert r.status_code == 200, (model, beam, r.data[:300])
    r = post(clients["gan"], "/api/gan/sample", {"n": 64, "seed": 2**31 - 1})
    assert r.status_code == 200


# route -> (service, a good body)
NATIVE_GOOD = {"/api/mnist/predict": ("mnist", {"image": [[0] * 28] * 28}),
          "/api/sentiment/predict": ("sentiment", {"text": "A fine film."}),
          "/api/translate": ("translation", {"text": "Good morning."}),
          "/api/generate": ("textgen", {"prompt": "ROMEO:", "max_tokens": 3}),
          "/api/gan/sample": ("gan", {"n": 1, "seed": 1})}


@pytest.mark.parametrize("route", list(NATIVE_GOOD))
def test_native_unknown_field_is_refused_by_name(clients, route):
    from services import catalog
    from services.runtime.config import LIMITS
    service, good = NATIVE_GOOD[route]
    c = clients[service]
    assert post(c, route, good).status_code == 200
    body = assert_clean_4xx(post(c, route, {**good, "colour": "blue"}), route)
    assert body["field"] == "colour" and "unknown field 'colour'" in body["error"]
    assert body["limit"] == sorted(catalog.ROUTES[route].schema(LIMITS)["properties"])  # the accepted fields


def test_native_unknown_field_suggests_what_was_meant(clients):
    body = assert_clean_4xx(post(clients["textgen"], "/api/generate", {"text": "ROMEO:"}), "text")
    assert "did you mean 'prompt'?" in body["error"] and body["field"] == "text"
    body = assert_clean_4xx(post(clients["textgen"], "/api/generate", {"prompt": "A", "max_token": 5}), "typo")
    assert "did you mean 'max_tokens'?" in body["error"]
    body = assert_clean_4xx(post(clients["textgen"], "/api/generate", {"prompt": "A", "temprature": 1}), "typo")
    assert "did you mean 'temperature'?" in body["error"]
    body = assert_clean_4xx(post(clients["gan"], "/api/gan/sample",
                                 {"interpolate": {"from_seed": 1, "to_seed": 2, "step": 4}}), "nested")
    assert body["field"] == "interpolate.step" and "'steps'" in body["error"]


def test_v1_and_v2_unknown_parameters_are_refused_but_the_protocols_own_pass(clients):
    c = clients["translation"]
    v2 = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["Hi."]}]}
    ok = post(c, "/v2/models/translation_transformer/infer", {**v2, "parameters": {"beam_size": 2,
                                                                                   "binary_data_output": False}})
    assert ok.status_code == 200
    body = assert_clean_4xx(post(c, "/v2/models/translation_transformer/infer",
                                 {**v2, "parameters": {"beam_width": 2}}), "v2")
    assert body["field"] == "beam_width" and "did you mean 'beam_size'?" in body["error"]
    body = assert_clean_4xx(post(c, "/v1/models/translation_transformer:predict",
                                 {"instances": ["Hi."], "parameters": {"beams": 2}}), "v1")
    assert body["field"] == "beams" and "unknown parameter" in body["error"]
    assert post(c, "/v1/models/translation_transformer:predict",
                {"instances": ["Hi."], "parameters": {"beam_size": 2}}).status_code == 200
