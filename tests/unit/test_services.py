"""Every protocol on every service through Flask's test client, on the shipped models."""
from __future__ import annotations

import base64
import io

import numpy as np
import orjson
import pytest
from PIL import Image, ImageDraw


def post(client, path, body, **kw):
    return client.post(path, data=orjson.dumps(body), **kw)


def png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


# ------------------------------------------------------------------------------------------------ mnist
def test_mnist_native_grids_are_classified(clients, mnist_test_digits):
    x, y = mnist_test_digits
    r = post(clients["mnist"], "/api/mnist/predict", {"images": [x[i].tolist() for i in range(48)]})
    assert r.status_code == 200
    preds = r.json["predictions"]
    acc = np.mean([p["digit"] == y[i] for i, p in enumerate(preds)])
    assert acc >= 0.95
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-3 and 0 <= p["confidence"] <= 1 for p in preds)


@pytest.mark.parametrize("style", ["dark_on_white_rgb", "white_on_black_small", "transparent_canvas", "jpeg"])
def test_mnist_images_any_size_and_background(clients, mnist_test_digits, style):
    x, y = mnist_test_digits
    correct = 0
    for i in range(10):
        d = Image.fromarray(x[i])
        if style == "dark_on_white_rgb":
            img = Image.fromarray(255 - x[i]).resize((280, 280)).convert("RGB")
        elif style == "white_on_black_small":
            img = d.resize((20, 20))
        elif style == "transparent_canvas":  # like a browser canvas: black strokes, transparent background
            big = np.asarray(d.resize((200, 200)))
            rgba = np.zeros((200, 200, 4), np.uint8)
            rgba[..., 3] = big
            img = Image.fromarray(rgba, "RGBA")
        else:
            buf = io.BytesIO()
            Image.fromarray(255 - x[i]).resize((100, 100)).save(buf, "JPEG", quality=90)
            img = Image.open(io.BytesIO(buf.getvalue()))
        r = post(clients["mnist"], "/api/mnist/predict", {"image": png_b64(img) if style != "jpeg" else
                                                          base64.b64encode(_jpeg(img)).decode()})
        assert r.status_code == 200, r.json
        correct += r.json["predictions"][0]["digit"] == y[i]
    assert correct >= 8


def _jpeg(img):
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def test_mnist_drawn_digit_one(clients):
    img = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(img).line([(100, 30), (100, 170)], fill=0, width=14)
    r = post(clients["mnist"], "/api/mnist/predict", {"image": png_b64(img)})
    assert r.json["predictions"][0]["digit"] == 1


def test_mnist_v1_and_v2_agree_with_native(clients, mnist_test_digits):
    x, _ = mnist_test_digits
    c = clients["mnist"]
    native = post(c, "/api/mnist/predict", {"images": [x[0].tolist(), x[1].tolist()]}).json["predictions"]
    v1 = post(c, "/v1/models/mnist:predict", {"instances": [(x[0] / 255).tolist(), (x[1] / 255).tolist()]}).json
    assert [int(np.argmax(p["probabilities"])) for p in v1["predictions"]] == [p["digit"] for p in native]
    col = post(c, "/v1/models/mnist/versions/1:predict", {"inputs": {"image": [(x[0] / 255).tolist()]}}).json
    assert np.argmax(col["outputs"]["probabilities"][0]) == native[0]["digit"]
    v2 = post(c, "/v2/models/mnist/infer", {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 1],
                                                        "data": (x[1] / 255).reshape(-1).tolist()}],
                                            "outputs": [{"name": "probabilities"}]}).json
    assert v2["outputs"][0]["shape"] == [1, 10] and np.argmax(v2["outputs"][0]["data"]) == native[1]["digit"]


@pytest.mark.parametrize("body,field", [
    ({}, "image"), ({"image": "not base64!!"}, "image"), ({"image": [[0] * 27] * 28}, "image"),
    ({"images": []}, "images"), ({"images": [[[0] * 28] * 28] * 65}, "images"),
    ({"image": [[300] * 28] * 28}, "image"), ({"image": base64.b64encode(b"GIF89a-not-an-image").decode()}, "image"),
    ({"image": 5}, "image"), ({"images": ["x"]}, "images[0]"), ({"images": [[[0] * 28] * 28, 5]}, "images[1]"),
])
def test_mnist_bad_input_is_400_with_field(clients, body, field):
    r = post(clients["mnist"], "/api/mnist/predict", body)
    assert r.status_code == 400 and r.json["field"] == field and r.json["error"]


# ------------------------------------------------------------------------------------------------ sentiment
REVIEWS = [("An absolute masterpiece: moving, funny and beautifully acted. I loved every minute.", "positive"),
           ("A wonderful film with a brilliant cast; I would happily watch it again.", "positive"),
           ("Dreadful. Boring plot, terrible acting and a waste of two hours.", "negative"),
           ("The worst movie I have seen this year; awful script and no redeeming qualities.", "negative")]


def test_sentiment_native_labels(clients):
    r = post(clients["sentiment"], "/api/sentiment/predict", {"texts": [t for t, _ in REVIEWS]})
    assert r.status_code == 200
    assert [p["label"] for p in r.json["predictions"]] == [lab for _, lab in REVIEWS]
    single = post(clients["sentiment"], "/api/sentiment/predict", {"text": REVIEWS[0][0]}).json
    assert single["predictions"][0]["score"] > 0.5


def test_sentiment_v1_v2_strings(clients):
    c = clients["sentiment"]
    v2 = post(c, "/v2/models/sentiment/infer", {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
                                                             "data": [REVIEWS[0][0], REVIEWS[2][0]]}]}).json
    labels = next(o for o in v2["outputs"] if o["name"] == "label")["data"]
    assert labels == ["positive", "negative"]
    b64 = base64.b64encode(REVIEWS[3][0].encode()).decode()
    v1 = post(c, "/v1/models/sentiment:predict", {"instances": [{"text": {"b64": b64}}]}).json
    assert v1["predictions"][0]["label"] == "negative"
    meta = c.get("/v1/models/sentiment/metadata").json
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["text"]["dtype"] == "DT_STRING"


@pytest.mark.parametrize("body,field", [({"text": ""}, "text"), ({"text": 3}, "text"), ({"text": "x" * 20001}, "text"),
                                        ({"texts": "abc"}, "texts"), ({"text": "a", "texts": ["b"]}, "text")])
def test_sentiment_bad_input(clients, body, field):
    r = post(clients["sentiment"], "/api/sentiment/predict", body)
    assert r.status_code == 400 and r.json["field"] == field


# ------------------------------------------------------------------------------------------------ translation
# the README's sentences (curl and v2 examples) and the demo page's, with the German both translators give
README_AND_DEMO = {"The file could not be saved.": "Die Datei konnte nicht gespeichert werden.",
                   "Please close the window.": "Bitte schließen Sie das Fenster.",
                   "I have lost my keys.": "Ich habe meine Schlüssel verloren."}


@pytest.mark.parametrize("model", ["transformer", "seq2seq"])
@pytest.mark.parametrize("beam_size", [1, 4])
def test_translation_of_the_readme_and_demo_sentences_is_exact(clients, model, beam_size):
    r = post(clients["translation"], "/api/translate", {"texts": list(README_AND_DEMO), "model": model,
                                                        "beam_size": beam_size})
    assert r.status_code == 200, r.json
    assert dict(zip(README_AND_DEMO, r.json["translations"], strict=False)) == README_AND_DEMO
    assert r.json["model"] == f"translation_{model}"


def test_translation_beam_hypotheses_and_the_default_model(clients):
    c = clients["translation"]
    r = post(c, "/api/translate", {"texts": ["The file could not be saved.", "I have lost my keys."],
                                   "beam_size": 4, "return_scores": True})
    assert r.status_code == 200, r.json
    assert r.json["translations"] == ["Die Datei konnte nicht gespeichert werden.",
                                      "Ich habe meine Schlüssel verloren."]
    for translation, hyps in zip(r.json["translations"], r.json["hypotheses"], strict=False):
        scores = [h["score"] for h in hyps]
        assert scores == sorted(scores, reverse=True) and 1 <= len(hyps) <= 4
        assert hyps[0]["text"] == translation  # the best hypothesis is the answer
    assert r.json["model"] == "translation_transformer"  # the default: the best on the held-out test


def test_translation_v2_bytes_with_parameters(clients):
    r = post(clients["translation"], "/v2/models/translation_transformer/infer",
             {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["Please close the window."]}],
              "parameters": {"beam_size": 4}})
    assert r.status_code == 200
    out = {o["name"]: o for o in r.json["outputs"]}
    assert out["translation"]["datatype"] == "BYTES"
    assert out["translation"]["data"] == ["Bitte schließen Sie das Fenster."]
    bad = post(clients["translation"], "/v2/models/translation_seq2seq/infer",
               {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["Hi."]}],
                "parameters": {"beam_size": 99}})
    assert bad.status_code == 400 and bad.json["field"] == "beam_size"


@pytest.mark.parametrize("body,field", [({"text": "Hi.", "beam_size": 0}, "beam_size"),
                                        ({"text": "Hi.", "beam_size": 9}, "beam_size"),
                                        ({"text": "Hi.", "model": "gpt"}, "model"),
                                        ({"text": "Hi.", "max_length": 1000}, "max_length"),
                                        ({"texts": ["a"] * 65}, "texts")])
def test_translation_bad_input(clients, body, field):
    r = post(clients["translation"], "/api/translate", body)
    assert r.status_code == 400 and r.json["field"] == field


# ------------------------------------------------------------------------------------------------ textgen
def test_textgen_reproducible_and_seeded(clients):
    c = clients["textgen"]
    body = {"prompt": "ROMEO:\n", "max_tokens": 60, "temperature": 0.7, "seed": 11}
    a, b = post(c, "/api/generate", body).json, post(c, "/api/generate", body).json
    assert a["text"] == b["text"] and a["tokens"] == 60 and a["finish_reason"] == "length"
    other = post(c, "/api/generate", {**body, "seed": 12}).json
    assert other["text"] != a["text"]


def test_textgen_stream_matches_final_text(clients):
    r = post(clients["textgen"], "/api/generate", {"prompt": "KING:", "max_tokens": 25, "seed": 5, "stream": True})
    assert r.mimetype == "text/event-stream"
    events = [e for e in r.data.decode().split("\n\n") if e.strip()]
    tokens = [orjson.loads(e[len("data: "):])["token"] for e in events[:-1]]
    assert events[-1].startswith("event: done")
    done = orjson.loads(events[-1].split("data: ", 1)[1])
    assert "".join(tokens) == done["text"] and len(tokens) == 25


def test_textgen_stop_string(clients):
    r = post(clients["textgen"], "/api/generate",
             {"prompt": "ROMEO:\n", "max_tokens": 300, "seed": 2, "stop": "\n"}).json
    assert "\n" not in r["text"] and r["finish_reason"] in ("stop", "length")


def test_textgen_v2(clients):
    r = post(clients["textgen"], "/v2/models/textgen/infer",
             {"inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [2], "data": ["To be", "O Romeo"]}],
              "parameters": {"max_tokens": 10, "seed": 1}})
    assert r.status_code == 200 and all(len(t) == 10 for t in r.json["outputs"][0]["data"])


def sse_data(r) -> list[dict]:
    return [orjson.loads(e[len("data: "):]) for e in r.data.decode().split("\n\n") if e.startswith("data: ")]


def test_triton_generate_and_generate_stream_answer_like_the_native_route(clients):
    """Triton's generate extension: the same seed gives the same text on /generate, on /generate_stream (its
    pieces joined), on v2 /infer and on the native route; parameters may sit beside text_input, as in Triton."""
    c = clients["textgen"]
    want = post(c, "/api/generate", {"prompt": "KING:", "max_tokens": 30, "seed": 9}).json["text"]
    whole = post(c, "/v2/models/textgen/generate", {"text_input": "KING:", "parameters": {"max_tokens": 30,
                                                                                        "seed": 9}})
    assert whole.status_code == 200 and whole.mimetype == "application/json"
    assert whole.json == {"model_name": "textgen", "model_version": whole.headers["X-Model-Version"],
                          "text_output": want}
    r = post(c, "/v2/models/textgen/generate_stream", {"text_input": "KING:", "max_tokens": 30, "seed": 9,
                                                       "stream": True})
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    events = sse_data(r)
    assert len(events) >= 2 and all(e["model_name"] == "textgen" for e in events)  # the first piece goes alone
    assert "".join(e["text_output"] for e in events) == want
    v2 = post(c, "/v2/models/textgen/infer", {"inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1],
                                                          "data": ["KING:"]}], "parameters": {"max_tokens": 30,
                                                                                              "seed": 9}})
    assert v2.json["outputs"][0]["data"] == [want]


def test_triton_generate_on_translation_and_what_cannot_generate(clients):
    t = clients["translation"]
    r = post(t, "/v2/models/translation_transformer/generate", {"text_input": "The file could not be saved."})
    assert r.status_code == 200 and r.json["text_output"] == "Die Datei konnte nicht gespeichert werden."
    r = post(t, "/v2/models/translation_transformer/generate_stream", {"text_input": "How are you?"})
    assert r.status_code == 400 and "does not stream" in r.json["error"] and r.mimetype == "application/json"
    r = post(clients["mnist"], "/v2/models/mnist/generate", {"text_input": "7"})
    assert r.status_code == 400 and "does not take one text" in r.json["error"] and r.json["field"] == "text_input"


@pytest.mark.parametrize("body,field", [({"parameters": {"max_tokens": 5}}, "text_input"),
                                        ({"text_input": 5}, "text_input"),
                                        ({"text_input": "a", "parameters": {"max_tokenz": 5}}, "max_tokenz"),
                                        ({"text_input": "a", "max_tokens": 0}, "max_tokens"),
                                        ({"text_input": "a", "max_tokens": 5, "parameters": {"max_tokens": 5}},
                                         "max_tokens"),
                                        ({"text_input": "a", "stream": True}, "stream"),
                                        ({"text_input": "日本語"}, "prompt")])
def test_triton_generate_bad_input(clients, body, field):
    r = post(clients["textgen"], "/v2/models/textgen/generate", body)
    assert r.status_code == 400 and r.json["field"] == field, r.json


@pytest.mark.parametrize("body,field", [({"prompt": "a", "temperature": -1}, "temperature"),
                                        ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
                                        ({"prompt": "a", "max_tokens": 10**6}, "max_tokens"),
                                        ({"prompt": "a", "top_p": 2}, "top_p"),
                                        ({"prompt": "a", "seed": -5}, "seed"),
                                        ({"prompt": "日本語"}, "prompt"),
                                        ({"prompt": "a", "stop": ["x"] * 9}, "stop")])
def test_textgen_bad_input(clients, body, field):
    r = post(clients["textgen"], "/api/generate", body)
    assert r.status_code == 400 and r.json["field"] == field


# ------------------------------------------------------------------------------------------------ gan
def test_gan_seeded_json_png_interpolation(clients):
    c = clients["gan"]
    a = post(c, "/api/gan/sample", {"n": 4, "seed": 3}).json
    assert a == post(c, "/api/gan/sample", {"n": 4, "seed": 3}).json
    imgs = np.array(a["images"])
    assert imgs.shape == (4, 28, 28) and imgs.min() >= 0 and imgs.max() <= 255
    r = post(c, "/api/gan/sample", {"n": 9, "seed": 3, "format": "png"})
    assert r.mimetype == "image/png" and Image.open(io.BytesIO(r.data)).size[0] > 28
    ip = post(c, "/api/gan/sample", {"interpolate": {"from_seed": 3, "to_seed": 4, "steps": 5}}).json
    assert len(ip["images"]) == 5 and ip["images"][0] == a["images"][0]
    z = np.random.default_rng(3).standard_normal((1, 100)).tolist()
    assert post(c, "/api/gan/sample", {"latent": z}).json["images"][0] == a["images"][0]


@pytest.mark.parametrize("body,field", [({"n": 0}, "n"), ({"n": 65}, "n"), ({"seed": "x"}, "seed"),
                                        ({"latent": [[0.0] * 3]}, "latent"), ({"format": "gif"}, "format"),
                                        ({"interpolate": {"from_seed": 1}}, "interpolate.to_seed"),
                                        ({"latent": [[float("inf")] * 100]}, "body")])
def test_gan_bad_input(clients, body, field):
    data = orjson.dumps(body) if field != "body" else b'{"latent": [[Infinity]]}'
    r = clients["gan"].post("/api/gan/sample", data=data)
    assert r.status_code == 400 and r.json.get("field") == field


# ------------------------------------------------------------------------------------------------ common
@pytest.mark.parametrize("svc,model", [("mnist", "mnist"), ("sentiment", "sentiment"), ("gan", "gan"),
                                       ("textgen", "textgen"), ("translation", "translation_transformer")])
def test_common_endpoints(clients, svc, model):
    c = clients[svc]
    assert c.get("/v2/health/live").status_code == 200
    assert c.get("/v2/health/ready").status_code == 200
    meta = c.get(f"/v2/models/{model}").json
    assert meta["name"] == model and meta["inputs"] and meta["outputs"]
    assert c.get(f"/v2/models/{model}/ready").json["ready"] is True
    assert c.get(f"/v2/models/{model}/versions/999").status_code == 404
    assert c.get("/v2/models/nope").status_code == 404
    assert c.get(f"/v1/models/{model}").json["model_version_status"][0]["state"] == "AVAILABLE"
    r = c.get("/v2/nope", headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 404 and r.json["error"] and r.headers["X-Request-ID"] == "abc-123"
    for unusable in ("x" * 129, "tab\there", "caf\u00e9"):  # the gateway's rule: replaced by a fresh id
        rid = c.get("/v2/nope", headers={"X-Request-ID": unusable}).headers["X-Request-ID"]
        assert len(rid) == 32 and int(rid, 16) >= 0
    assert c.post(f"/v2/models/{model}/infer", data=b"{not json").status_code == 400
    assert b"model_requests_total" in c.get("/metrics").data


def test_batch_size_metric_shows_batching(clients, mnist_test_digits):
    import threading
    x, _ = mnist_test_digits
    c = clients["mnist"]
    body = orjson.dumps({"image": x[0].tolist()})
    ts = [threading.Thread(target=lambda: [c.post("/api/mnist/predict", data=body) for _ in range(5)])
          for _ in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    text = c.get("/metrics").data.decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("model_batch_size_bucket") and 'model="mnist"' in line:
            le = line.split('le="')[1].split('"')[0]
            counts[le] = float(line.rsplit(" ", 1)[1])
    assert counts["+Inf"] > counts["1.0"], "some calls carried more than one request"


def test_mnist_uploads_answer_as_base64(clients, mnist_test_digits):
    """multipart (one 'image', or several 'images') and a raw image body give the base64 answers."""
    x, _ = mnist_test_digits
    pngs = []
    for i in range(3):
        buf = io.BytesIO()
        Image.fromarray(255 - x[i]).resize((140, 140)).save(buf, "PNG")
        pngs.append(buf.getvalue())
    c = clients["mnist"]
    want = post(c, "/api/mnist/predict", {"images": [base64.b64encode(p).decode() for p in pngs]}).json["predictions"]
    one = c.post("/api/mnist/predict", data={"image": (io.BytesIO(pngs[0]), "d.png")},
                 content_type="multipart/form-data")
    assert one.status_code == 200 and one.json["predictions"] == want[:1]
    many = c.post("/api/mnist/predict", data={"images": [(io.BytesIO(p), f"d{i}.png") for i, p in enumerate(pngs)]},
                  content_type="multipart/form-data")
    assert many.status_code == 200 and many.json["predictions"] == want
    raw = c.post("/api/mnist/predict", data=pngs[1], content_type="image/png")
    assert raw.status_code == 200 and raw.json["predictions"] == want[1:2]
    sniffed = c.post("/api/mnist/predict", data=pngs[2], content_type="application/x-www-form-urlencoded")
    assert sniffed.status_code == 200 and sniffed.json["predictions"] == want[2:3]  # curl --data-binary @d.png


def test_mnist_text_or_unreadable_uploads_get_a_clear_error(clients):
    c = clients["mnist"]
    r = c.post("/api/mnist/predict", data=b"just some text", content_type="text/plain")
    assert r.status_code == 415 and "multipart/form-data" in r.json["error"] and "image/png" in r.json["error"]
    r = c.post("/api/mnist/predict", data=b"GIF89a....", content_type="image/gif")
    assert r.status_code == 415
    r = c.post("/api/mnist/predict", data={"image": (io.BytesIO(b"not an image"), "notes.txt")},
               content_type="multipart/form-data")
    assert r.status_code == 400 and "not a readable" in r.json["error"] and "limit" not in r.json
    r = c.post("/api/mnist/predict", data={"picture": (io.BytesIO(b"x"), "d.png")}, content_type="multipart/form-data")
    assert r.status_code == 400 and r.json["field"] == "picture"


def test_wrong_method_and_unknown_route_say_what_exists(clients):
    r = clients["mnist"].get("/api/mnist/predict")
    assert r.status_code == 405 and "use POST" in r.json["error"] and r.headers["Allow"] == "POST"
    r = clients["mnist"].post("/api/mnist/predikt", json={})
    assert r.status_code == 404 and "/api/mnist/predict" in r.json["error"]


def test_the_server_version_is_the_one_in_pyproject(clients):
    import tomllib

    from services.gateway.openapi import spec
    from tests.conftest import ROOT
    want = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert clients["mnist"].get("/v2").json["version"] == want and spec()["info"]["version"] == want


def test_configuration_page_is_written_from_the_settings():
    from services.settings import markdown
    from tests.conftest import ROOT
    assert (ROOT / "docs" / "configuration.md").read_text() == markdown(), "run: python -m services.settings"


def test_a_setting_that_does_not_parse_stops_the_process_with_its_name():
    import pytest

    from services.settings import GatewaySettings, ServiceSettings, SettingError
    with pytest.raises(SettingError, match="LIMIT_BEAM_SIZE='many' is not a valid int"):
        ServiceSettings.from_env({"LIMIT_BEAM_SIZE": "many"})
    with pytest.raises(SettingError, match="MODEL_DEVICE must be one of auto, cpu, cuda"):
        ServiceSettings.from_env({"MODEL_DEVICE": "tpu"})
    assert ServiceSettings.from_env({"MODEL_DEVICE": "CPU"}).model_device == "cpu"  # any case
    s = GatewaySettings.from_env({"BACKEND_MNIST_URL": "http://10.0.0.1:9001", "GATEWAY_UPSTREAM_TIMEOUT": "5"})
    assert s.backend_urls == (("mnist", "http://10.0.0.1:9001"),) and s.upstream_timeout == 5.0


def test_every_family_is_declared_once_in_the_catalog_and_everything_reads_it():
    """A family's row names what its parts are found by: its app, its training job, the task its manifests
    record; the training command, the k8s generator and the process defaults take theirs from it."""
    import importlib.util

    from k8s.generate import DEPLOYMENTS
    from modelcore.manifest import TASKS
    from services import catalog
    from services.settings import SERVICE_DEFAULTS
    from tests.conftest import ROOT, latest
    from training.__main__ import FAMILIES

    exposed = [line.split()[1:] for line in (ROOT / "Dockerfile").read_text().splitlines()
               if line.startswith("EXPOSE")]
    assert exposed and all(str(s.port) in ports for ports in exposed for s in catalog.SERVICES), exposed
    assert FAMILIES == [s.name for s in catalog.SERVICES if not s.imported]
    for s in catalog.SERVICES:
        assert importlib.util.find_spec(s.app.split(":")[0]) is not None, s.app
        assert s.task in TASKS, s.task
        assert DEPLOYMENTS[s.name][0] == s.port and DEPLOYMENTS[s.name][-1] == s.resources.max_replicas
        assert SERVICE_DEFAULTS.get(s.name, {}) == dict(s.defaults)
        if s.training_job:
            assert importlib.util.find_spec(s.training_job) is not None, s.training_job
        for model in s.models:  # the shipped models say the task their family declares
            manifest = orjson.loads((latest(model) / "manifest.json").read_bytes())
            assert manifest["task"] == s.task, model


def test_settings_given_to_create_app_are_the_ones_it_serves_with():
    """create_app(settings=...) holds for every check of the process (the data plane's batch limit on v2, not
    only the native routes' schemas, which the app builds itself)."""
    import dataclasses

    from services.mnist.app import create_app
    from services.runtime import config
    from services.settings import ServiceSettings
    given = dataclasses.replace(ServiceSettings.load(), limit_batch_items=2)

    def v2(rows: int):
        return post(c, "/v2/models/mnist/infer", {"inputs": [{"name": "image", "datatype": "FP32",
                                                              "shape": [rows, 28, 28, 1], "data": [0.0] * 784 * rows}]})
    try:
        c = create_app(poll=False, settings=given).test_client()
        r = v2(3)
        assert r.status_code == 400 and r.json["limit"] == 2, r.json
        assert v2(2).status_code == 200
    finally:
        config.use(None)


def test_serve_on_ones_own_repository_starts_only_what_it_holds(tmp_path, capsys):
    """keras-onnx-serving serve: a family's service only where the repository holds its model, the models service
    always (what is imported while it runs), and a repository that does not exist refused with the command that
    makes one."""
    from services import catalog, stack
    from services.cli import main
    (tmp_path / "mnist" / "3").mkdir(parents=True)
    (tmp_path / "mnist" / "3" / "manifest.json").write_text("{}")
    (tmp_path / "sentiment").mkdir()  # a folder with no version: not a model
    assert stack.services_for(tmp_path) == ["mnist", "models"]
    assert stack.services_for(tmp_path / "empty") == ["models"]
    assert stack.services_for(None) == [s.name for s in catalog.SERVICES]  # make serve: every one
    assert main(["serve", "--repository", str(tmp_path / "missing")]) == 2
    out = capsys.readouterr().out
    assert "no model repository at" in out and "keras-onnx-serving import NAME SOURCE --repository" in out
    assert main(["bogus"]) == 2 and main([]) == 2
