"""The official ``openai`` client, unchanged, against the gateway: completions (one or several prompts, ``n``,
stop strings, seeds), streaming to ``data: [DONE]``, the model list, OpenAI-shaped errors; and the TF Serving
paths under ``/v1/models/NAME`` beside them."""
from __future__ import annotations

import openai
import pytest
import requests


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_are_listed_in_openai_shape(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["textgen"]


def test_completion_with_several_prompts_n_stop_and_seed(client):
    r = client.completions.create(model="textgen", prompt=["ROMEO:\n", "JULIET:\n"], n=2, max_tokens=30,
                                  temperature=0.8, top_p=0.95, seed=11, stop=["\n\n"])
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert all(c.finish_reason in ("stop", "length") and "\n\n" not in c.text for c in r.choices)
    assert any(c.finish_reason == "length" and len(c.text) == 30 for c in r.choices)
    assert r.usage.prompt_tokens == 2 * (len("ROMEO:\n") + len("JULIET:\n"))
    assert r.usage.completion_tokens <= 4 * 30 and r.usage.total_tokens == r.usage.prompt_tokens + \
        r.usage.completion_tokens
    again = client.completions.create(model="textgen", prompt=["ROMEO:\n", "JULIET:\n"], n=2, max_tokens=30,
                                      temperature=0.8, top_p=0.95, seed=11, stop=["\n\n"])
    assert [c.text for c in again.choices] == [c.text for c in r.choices]  # a seed repeats every choice
    assert r.choices[0].text != r.choices[1].text  # ... and the samples of one prompt differ


def test_streamed_completion_matches_the_plain_one(client):
    plain = client.completions.create(model="textgen", prompt="KING HENRY:\n", max_tokens=60, seed=5)
    chunks = list(client.completions.create(model="textgen", prompt="KING HENRY:\n", max_tokens=60, seed=5,
                                            stream=True))
    assert len(chunks) >= 2
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage.completion_tokens == 60
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_completion_equals_the_native_api(stack, client):
    """The same seed and settings give the same text as /api/generate, plain and streamed."""
    settings = {"prompt": "ROMEO:\n", "max_tokens": 80, "temperature": 0.7, "top_p": 0.9, "seed": 21}
    native = requests.post(stack.url + "/api/generate", json=settings, timeout=30).json()["text"]
    plain = client.completions.create(model="textgen", **settings).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="textgen", stream=True,
                                                                             **settings) if c.choices)
    assert plain == streamed == native


def test_stream_ends_with_done(stack):
    r = requests.post(stack.url + "/v1/completions", json={"model": "textgen", "prompt": "ROMEO:", "max_tokens": 5,
                                                           "stream": True, "n": 2}, timeout=30)
    assert r.headers["content-type"].startswith("text/event-stream")
    lines = [x for x in r.text.split("\n") if x]
    assert lines[-1] == "data: [DONE]" and all(x.startswith("data: ") for x in lines)
    assert r.text.count('"finish_reason":"length"') == 2


def test_errors_are_openai_errors(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="hi")
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="textgen", prompt="hi", logprobs=2)
    assert e.value.body["param"] == "logprobs"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="textgen", prompt="hi", max_tokens=100000)
    assert e.value.body["param"] == "max_tokens" and "1000" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="textgen", prompt="hi", extra_body={"top_kk": 3})
    assert e.value.body["param"] == "top_kk"
    # LangChain-style defaults that mean "off" are accepted
    r = client.completions.create(model="textgen", prompt="hi", max_tokens=3, presence_penalty=0,
                                  frequency_penalty=0, best_of=1, logit_bias={})
    assert r.choices[0].finish_reason == "length"


def test_tf_serving_paths_still_work_beside_it(stack):
    assert requests.get(stack.url + "/v1/models/textgen", timeout=10).json()["model_version_status"]
    r = requests.post(stack.url + "/v1/models/textgen:predict",
                      json={"instances": ["ROMEO:"], "parameters": {"max_tokens": 4, "seed": 1}}, timeout=30)
    assert r.status_code == 200 and len(r.json()["predictions"][0]) == 4
