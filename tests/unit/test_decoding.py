"""Greedy, beam search and sampling on a tiny real ONNX step graph (built here with onnx.helper), driven by
the continuous-batching scheduler exactly as the services drive the exported decoders."""
from __future__ import annotations

from itertools import repeat

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelcore.decoding_jobs import BeamSearchJob, SamplingJob
from modelcore.sampling import sample_rows
from modelcore.scheduler import Scheduler
from modelcore.steps import ArrayStepAdapter, Row, StepAdapter, batched_inputs, log_softmax

V, H, EOS = 6, 4, 5


def tiny_step_graph(path):
    """logits = E[token] + h @ U;  h_out = tanh(h @ W + E2[token])."""
    rng = np.random.default_rng(0)
    E = rng.normal(0, 2, (V, V)).astype(np.float32)
    U = rng.normal(0, 1, (H, V)).astype(np.float32)
    W = rng.normal(0, 1, (H, H)).astype(np.float32)
    E2 = rng.normal(0, 1, (V, H)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["E", "token"], ["e"]), helper.make_node("MatMul", ["h", "U"], ["hu"]),
             helper.make_node("Add", ["e", "hu"], ["logits"]), helper.make_node("MatMul", ["h", "W"], ["hw"]),
             helper.make_node("Gather", ["E2", "token"], ["e2"]), helper.make_node("Add", ["hw", "e2"], ["pre"]),
             helper.make_node("Tanh", ["pre"], ["h_out"])]
    graph = helper.make_graph(
        nodes, "step",
        [helper.make_tensor_value_info("token", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", H])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", V]),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["N", H])],
        [numpy_helper.from_array(a, n) for a, n in [(E, "E"), (U, "U"), (W, "W"), (E2, "E2")]])
    # IR 8, as tf2onnx writes: onnx's default (14) is more than onnxruntime-gpu 1.31 reads (13)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)


class Adapter(StepAdapter):
    def __init__(self, path):
        self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.calls = []

    def step(self, rows):
        self.calls.append(len(rows))
        logits, h = self.sess.run(["logits", "h_out"], {"token": np.array([r.token for r in rows], np.int64),
                                                        "h": np.stack([r.state for r in rows])})
        return log_softmax(logits), list(h)

    def score(self, tokens):
        """Exact log-probability of a token sequence ending in EOS (for checking beam search)."""
        h, tok, total = np.zeros(H, np.float32), 0, 0.0
        for t in tokens + [EOS]:
            lp, hs = self.step([Row(h, tok, 0)])
            total += lp[0][t]
            h, tok = hs[0], t
        return total


@pytest.fixture()
def adapter(tmp_path):
    tiny_step_graph(tmp_path / "step.onnx")
    return Adapter(tmp_path / "step.onnx")


def first_row():
    return Row(np.zeros(H, np.float32), 0, 0)


def test_greedy_equals_argmax_chain(adapter):
    job = BeamSearchJob(adapter, first_row(), beam_size=1, max_len=8, eos_id=EOS, banned=(0,))
    Scheduler().run_until_done([job])
    got = job.results()[0].tokens
    h, tok, want = np.zeros(H, np.float32), 0, []
    for _ in range(8):
        lp, hs = adapter.step([Row(h, tok, 0)])
        lp[0][0] = -np.inf
        t = int(np.argmax(lp[0]))
        if t == EOS:
            break
        want.append(t)
        h, tok = hs[0], t
    assert got == want


def test_beam_finds_at_least_greedy_score_and_scores_are_exact(adapter):
    greedy = BeamSearchJob(adapter, first_row(), 1, 8, EOS, banned=(0,))
    beam = BeamSearchJob(adapter, first_row(), 4, 8, EOS, banned=(0,))
    Scheduler().run_until_done([greedy, beam])
    best_g, best_b = greedy.results()[0], beam.results()[0]
    assert best_b.score(beam.alpha) >= best_g.score(greedy.alpha) - 1e-6
    for hyp in beam.results():
        if len(hyp.tokens) < 8:
            assert abs(hyp.logprob - adapter.score(hyp.tokens)) < 1e-4
    assert len(beam.results()) <= 4


def test_jobs_share_steps_continuous_batching(adapter):
    jobs = [BeamSearchJob(adapter, first_row(), 3, 6, EOS, banned=(0,)) for _ in range(5)]
    sched = Scheduler(max_rows=64)
    sched.run_until_done(jobs)
    assert max(adapter.calls) > 3  # rows of several jobs (and beams) in one call
    assert all(j.done for j in jobs)


def test_sampling_is_reproducible_and_respects_top_k(adapter):
    def run(seed, **kw):
        job = SamplingJob(adapter, np.zeros(H, np.float32), [1, 2], max_tokens=12, temperature=kw.get("t", 1.0),
                          top_k=kw.get("k", 0), top_p=kw.get("p", 1.0), seed=seed, banned=(0,))
        Scheduler().run_until_done([job])
        return job.tokens
    assert run(7) == run(7)
    assert run(7) != run(8) or run(7) != run(9)
    assert len(run(1)) == 12
    # top_k=1 and temperature 0 are both greedy
    assert run(3, k=1) == run(4, t=0.0)
    assert 0 not in run(5)


class RawLogits(Adapter):
    """An adapter that is only sampled from: its step returns raw logits (as the text generator's does)."""
    normalized = False

    def step(self, rows):
        lp, states = super().step(rows)
        return lp + 3.5 * np.arange(1, len(rows) + 1)[:, None], states  # a different shift per row


def test_sampling_from_raw_logits_draws_what_log_probabilities_draw(adapter, tmp_path):
    tiny_step_graph(tmp_path / "raw.onnx")
    raw = RawLogits(tmp_path / "raw.onnx")

    def run(a, seed, **kw):
        jobs = [SamplingJob(a, np.zeros(H, np.float32), [1, 2], max_tokens=15, seed=seed + i, banned=(0,), **kw)
                for i in range(3)]
        Scheduler().run_until_done(jobs)
        return [j.tokens for j in jobs]
    for kw in (dict(temperature=1.0, top_k=0, top_p=1.0), dict(temperature=0.6, top_k=3, top_p=0.9)):
        assert run(raw, 21, **kw) == run(adapter, 21, **kw)
    with pytest.raises(ValueError, match="log-probabilities"):
        BeamSearchJob(raw, Row(np.zeros(H, np.float32), 0, 0), beam_size=2, max_len=5, eos_id=EOS)


def test_seeded_stream_draws_the_same_tokens_alone_or_in_a_mixed_batch(adapter):
    """Streams are sampled together in one vectorised draw; each row's own RNG keeps a seed's output
    independent of what else (other knobs, greedy rows, prompts still being read) shares the batch."""
    knobs = [dict(temperature=1.0, top_k=0, top_p=1.0), dict(temperature=0.7, top_k=3, top_p=1.0),
             dict(temperature=1.3, top_k=0, top_p=0.8), dict(temperature=0.0, top_k=0, top_p=1.0),
             dict(temperature=0.9, top_k=2, top_p=0.6)]

    def job(i, kw, prompt):
        return SamplingJob(adapter, np.zeros(H, np.float32), prompt, max_tokens=10 + i, seed=100 + i, banned=(0,),
                           **kw)
    alone = []
    for i, kw in enumerate(knobs):
        j = job(i, kw, [1, 2])
        Scheduler().run_until_done([j])
        alone.append(j.tokens)
    mixed = [job(i, kw, [1, 2]) for i, kw in enumerate(knobs)] + [job(9, knobs[0], [3, 1, 2, 4])]
    Scheduler().run_until_done(mixed)
    assert [j.tokens for j in mixed[:len(knobs)]] == alone
    assert max(adapter.calls) == len(mixed)


def test_batched_inputs_feeds_last_outputs_back_without_copies():
    h, c = np.arange(12, dtype=np.float32).reshape(3, 4), -np.arange(12, dtype=np.float32).reshape(3, 4)
    rows = [Row((h, c, i), 0, 0) for i in range(3)]
    fed = batched_inputs(rows)
    assert fed[0] is h and fed[1] is c                      # the same streams, in order: no copy
    gh, gc = batched_inputs([rows[2], rows[0]])             # a stream finished, order changed: one gather
    np.testing.assert_array_equal(gh, h[[2, 0]])
    np.testing.assert_array_equal(gc, c[[2, 0]])
    zero = np.zeros((1, 4), np.float32)
    sh, sc = batched_inputs([rows[1], Row((zero, zero, 0), 0, 0)])  # a stream joined: stacked
    np.testing.assert_array_equal(sh, np.stack([h[1], zero[0]]))
    np.testing.assert_array_equal(sc, np.stack([c[1], zero[0]]))


def test_batched_state_adapter_draws_what_per_row_states_draw(adapter, tmp_path):
    """The text generator keeps its state as rows of the last step's outputs (batched_inputs); streams that
    join, finish and read prompts at different times must draw exactly what per-row states draw."""
    class Batched(Adapter):
        def step(self, rows):
            self.calls.append(len(rows))
            (h,) = batched_inputs(rows)
            logits, h = self.sess.run(["logits", "h_out"], {"token": np.array([r.token for r in rows], np.int64),
                                                            "h": h})
            return log_softmax(logits), list(zip(repeat(h), range(len(rows))))
    tiny_step_graph(tmp_path / "b.onnx")
    batched = Batched(tmp_path / "b.onnx")

    def run(model, first):
        jobs = [SamplingJob(model, first, [1, 2, 3][: 1 + i % 3], max_tokens=5 + 3 * i, temperature=0.9, top_k=0,
                            top_p=1.0, seed=i, banned=(0,)) for i in range(6)]
        sched = Scheduler()
        sched.jobs.extend(jobs[:3])
        sched.tick(), sched.tick()
        sched.run_until_done(jobs[3:])                      # three more join mid-way
        return [j.tokens for j in jobs]
    assert run(batched, (np.zeros((1, H), np.float32), 0)) == run(adapter, np.zeros(H, np.float32))


def test_next_uniform_is_the_generators_own_sequence():
    job = SamplingJob(None, None, [1], 5, 1.0, 0, 1.0, seed=7)
    rng = np.random.default_rng(7)
    assert [job.next_uniform() for _ in range(150)] == [rng.random() for _ in range(150)]


def test_sample_rows_follows_softmax_top_k_and_top_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 4))
    rng = np.random.default_rng(0)
    n = 20000
    counts = np.zeros((4, 4))
    for _ in range(n // 100):
        u = rng.random((100, 4))
        for r, (t, k, p) in enumerate([(1.0, 0, 1.0), (1.0, 2, 1.0), (1.0, 0, 0.7), (0.0, 0, 1.0)]):
            toks = sample_rows(np.repeat(logits[r:r + 1], 100, 0), np.full(100, t), np.full(100, k),
                               np.full(100, p), u[:, r], np.array([], np.int64))
            counts[r] += np.bincount(toks, minlength=4)
    freq = counts / n
    np.testing.assert_allclose(freq[0], [0.5, 0.3, 0.15, 0.05], atol=0.015)      # plain softmax
    np.testing.assert_allclose(freq[1], [0.625, 0.375, 0, 0], atol=0.015)        # top-k 2, renormalised
    np.testing.assert_allclose(freq[2], [0.625, 0.375, 0, 0], atol=0.015)        # 0.5 + 0.3 reach top-p 0.7
    assert freq[3].tolist() == [1, 0, 0, 0]                                        # temperature 0: argmax
    banned = sample_rows(logits, np.ones(4), np.zeros(4, np.int64), np.ones(4), np.full(4, 0.1), np.array([0, 1]))
    assert set(banned.tolist()) <= {2, 3}


def test_stop_callback_ends_stream(adapter):
    seen = []
    job = SamplingJob(adapter, np.zeros(H, np.float32), [1], 50, 1.0, 0, 1.0, 0,
                      on_token=lambda t: (seen.append(t), t is not None and len(seen) < 3)[1])
    Scheduler().run_until_done([job])
    assert len(job.tokens) == 3 and job.stop_reason == "stop"


def test_failed_step_fails_its_jobs_only():
    class Broken(StepAdapter):
        def step(self, rows):
            raise RuntimeError("boom")
    job = BeamSearchJob(Broken(), first_row(), 2, 5, EOS)
    Scheduler().run_until_done([job])
    assert job.done and isinstance(job.error, RuntimeError)


def test_array_stepped_streams_draw_what_row_stepped_streams_draw(adapter, tmp_path):
    """An adapter with ``step_arrays`` is stepped by a SampledBatch (arrays fed back tick after tick, a batch
    rebuilt when streams join or leave): streams that read prompts, join mid-way, stop on a callback, are
    cancelled or reach max_tokens must make exactly the tokens the row-by-row path makes, and each reader
    hears of its first token and its end once."""
    class Arrays(Adapter, ArrayStepAdapter):
        def step_arrays(self, token, states):
            self.calls.append(len(token))
            logits, h = self.sess.run(["logits", "h_out"], {"token": token, "h": states[0]})
            return log_softmax(logits), (h,)
    tiny_step_graph(tmp_path / "a.onnx")
    arrays = Arrays(tmp_path / "a.onnx")
    knobs = [dict(temperature=0.9, top_k=0, top_p=1.0), dict(temperature=0.0, top_k=0, top_p=1.0),
             dict(temperature=1.2, top_k=3, top_p=0.8)]

    def run(model, first):
        events: list = []
        jobs = []
        for i in range(7):
            stop = (lambda t, seen=[]: (seen.append(t), t is None or len(seen) < 4)[1]) if i == 2 else None
            jobs.append(SamplingJob(model, first, [1, 2, 3, 4][: 1 + i % 4], max_tokens=4 + 3 * i, seed=50 + i,
                                    banned=(0,), on_token=stop,
                                    on_first=lambda i=i: events.append(("first", i)),
                                    on_end=lambda i=i: events.append(("end", i)), **knobs[i % 3]))
        sched = Scheduler()
        sched.jobs.extend(jobs[:4])
        for _ in range(3):
            sched.tick()
        jobs[5].cancelled = True                            # gone before it starts
        sched.jobs.extend(jobs[4:6])
        sched.tick()
        jobs[3].cancelled = True                            # gone mid-way
        sched.run_until_done(jobs[6:])
        return [(j.tokens, j.stop_reason) for j in jobs], sorted(events)
    got, events = run(arrays, (np.zeros((1, H), np.float32), 0))
    assert (got, events) == run(adapter, np.zeros(H, np.float32))
    assert [reason for _, reason in got] == ["length", "length", "stop", "cancelled", "length", "cancelled", "length"]
    assert events.count(("end", 0)) == 1 and ("first", 5) not in events
    assert max(arrays.calls) >= 4                           # streams share calls


def test_cancelled_jobs_of_every_kind_leave_the_batch_at_the_next_step(adapter):
    """A request whose client left or whose deadline passed marks its jobs cancelled: beam searches leave the
    batch at the scheduler's next step, as sampled streams do, instead of decoding to their length limit."""
    beams = [BeamSearchJob(adapter, first_row(), 4, 1000, EOS, banned=(0, EOS)) for _ in range(3)]
    stream = SamplingJob(adapter, np.zeros(H, np.float32), [1], 1000, 1.0, 0, 1.0, 0)
    sched = Scheduler(max_rows=64)
    sched.jobs.extend([*beams, stream])
    for _ in range(3):
        sched.tick()
    assert adapter.calls[-1] == 3 * 4 + 1  # every beam of every job, and the stream
    beams[0].cancelled = beams[1].cancelled = stream.cancelled = True
    sched.tick()
    assert beams[0].done and beams[1].done and stream.done and stream.stop_reason == "cancelled"
    assert beams[0].finished.is_set() and not beams[2].done
    assert adapter.calls[-1] == 4 and sched.jobs == [beams[2]]  # only the job still wanted was stepped
    beams[2].cancelled = True
    calls = len(adapter.calls)
    sched.tick()
    assert sched.jobs == [] and len(adapter.calls) == calls  # nothing left to step
