"""Prompts read in one call (services/runtime/prefill.py): the step graph wrapped in a Scan must give the states
that stepping it gives, and a generation must not change when its prompt is read that way."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from bench.run import LONG_PROMPT as PROMPT  # the benchmark's passage (Romeo and Juliet, II.2)
from modelcore.manifest import load_and_verify
from modelcore.textgen import CharModel
from services.runtime.prefill import check_against_steps, scan_graph
from services.runtime.sessions import create_session
from services.settings import ServiceSettings
from tests.conftest import ROOT

TEXTGEN = ROOT / "exported_models" / "textgen" / "2"


@pytest.fixture(scope="module")
def sessions():
    step = onnx.load(str(TEXTGEN / "step.onnx"))
    prefill = create_session(scan_graph(step, CharModel.TOKEN, CharModel.STATES).SerializeToString(), "cpu")
    return create_session(TEXTGEN / "step.onnx", "cpu"), prefill


def test_prefill_graph_reads_a_prompt_as_the_steps_do_and_drops_the_logits(sessions):
    step, prefill = sessions
    assert [o.name for o in prefill.get_outputs()] == ["h_out", "c_out"]  # no logits: nothing reads them
    assert check_against_steps(prefill, step, CharModel.TOKEN, CharModel.STATES, 78, length=40) <= 1e-5
    # a batch of prompts of the same length, from a state that is not zero
    rng = np.random.default_rng(3)
    ids = rng.integers(2, 78, (25, 3)).astype(np.int64)
    h, c = (rng.normal(0, .5, (3, 384)).astype(np.float32) for _ in range(2))
    sh, sc = h, c
    for t in range(len(ids)):
        _, sh, sc = step.run(None, {"token": ids[t], "h": sh, "c": sc})
    ph, pc = prefill.run(None, {"tokens": ids, "h": h, "c": c})
    np.testing.assert_allclose(ph, sh, atol=1e-5)
    np.testing.assert_allclose(pc, sc, atol=1e-5)


def test_a_prefill_graph_that_differs_from_the_steps_is_refused(sessions):
    from onnx import numpy_helper
    step, _ = sessions
    other = onnx.load(str(TEXTGEN / "step.onnx"))  # a graph whose weights are not the served step's
    init = next(i for i in other.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.01, init.name))
    wrong = create_session(scan_graph(other, CharModel.TOKEN, CharModel.STATES).SerializeToString(), "cpu")
    with pytest.raises(ValueError, match="differs from the step graph"):
        check_against_steps(wrong, step, CharModel.TOKEN, CharModel.STATES, 78)


def test_a_generation_is_the_same_whether_its_prompt_is_stepped_or_prefilled(sessions):
    from modelcore.scheduler import Scheduler
    step, prefill = sessions
    manifest = load_and_verify(TEXTGEN)
    stepped, prefilled = (CharModel(manifest, TEXTGEN, step, p, n) for p, n in ((None, 0), (prefill, 16)))
    for prompt, seed in ((PROMPT, 5), (PROMPT[:20], 9)):
        ids = stepped.prompt_ids(prompt)
        state, rest = prefilled.read_prompt(ids)
        assert rest == ids[-1:] and state[0].shape == (1, 384)  # all but the last id read in one call
        texts = []
        for model in (stepped, prefilled):
            job = model.job(prompt, 120, 0.8, 0, 0.95, seed)
            Scheduler().run_until_done([job])
            texts.append(model.text(job.tokens))
        assert len(texts[0]) == 120 and texts[0] == texts[1]
    short = stepped.prompt_ids("ROMEO:")  # below the threshold: read by the scheduler's steps, as before
    assert prefilled.read_prompt(short) == (prefilled.first_state(), short)


def test_the_service_reads_long_prompts_with_the_prefill_graph(clients):
    servable = clients["textgen"].application.extensions["repository"].get("textgen", None)
    assert servable.model.prefill is not None and servable.model.prefill_min_tokens == 16
    r = clients["textgen"].post("/api/generate", json={"prompt": PROMPT, "max_tokens": 30, "seed": 2})
    assert r.status_code == 200 and r.get_json()["tokens"] == 30


def test_without_a_prefill_graph_prompts_are_stepped_as_before(monkeypatch, caplog):
    import services.textgen.model as textgen
    manifest = load_and_verify(TEXTGEN)
    monkeypatch.setenv("PREFILL_MIN_TOKENS", "0")  # turned off: not even built
    ServiceSettings.load.cache_clear()  # as a process started with it
    assert textgen.TextgenServable(manifest, TEXTGEN).model.prefill is None
    monkeypatch.setenv("PREFILL_MIN_TOKENS", "16")
    ServiceSettings.load.cache_clear()

    def broken(*args):
        raise ValueError("no Scan here")
    monkeypatch.setattr(textgen, "scan_graph", broken)  # a graph it cannot build: logged, and served without
    s = textgen.TextgenServable(manifest, TEXTGEN)
    assert s.model.prefill is None and "no prefill graph" in caplog.text
    text, n, _ = s.generate([PROMPT], dict(max_tokens=10, temperature=0.8, top_k=0, top_p=1.0, seed=1, stop=[]))[0]
    assert n == 10 and len(text) == 10
