"""Streaming paths: when a text stream's writer is woken, the gateway's one-write transport, and the
benchmark's SSE client counting tokens against the real stack."""
from __future__ import annotations

import time

import pytest

from modelcore.text import Vocabulary
from services.textgen.model import Stream


class Model:
    vocab = Vocabulary(["a", "b", "c", "\n"], kind="char")

    def text(self, ids):
        return "".join(self.vocab.decode(ids))


def test_stream_wakes_writer_for_first_piece_and_end_only_and_writer_keeps_its_own_time():
    st = Stream(Model(), stop=[], streaming=True, flush_seconds=0.05)
    assert st.on_token(0) and st.ready.is_set()  # the first piece wakes the writer at once
    assert st.take(1) == (["a"], False)
    st.on_token(1)
    st.on_token(2)
    assert not st.ready.is_set()  # later pieces wake nobody: the writer takes them on its own time
    t0 = time.monotonic()
    assert st.take(1) == (["b", "c"], False)
    assert time.monotonic() - t0 >= 0.04  # it waited its flush interval (a lower bound holds on a busy machine)
    st.on_token(0)
    assert not st.ready.is_set()
    st.on_token(None)  # the end wakes the writer at once, with what is left: the event, not the clock
    assert st.ready.is_set()
    assert st.take(1) == (["a"], True)
    assert st.text == "abca"


def test_stream_without_stop_strings_reads_its_jobs_tokens_and_is_woken_twice():
    """The usual stream (no stop strings, a writer on its own time) costs the scheduler no call per token:
    it asks for on_first/on_end only and reads the text from the job's tokens."""
    class Job:
        tokens: list = []

    class Maker(Model):
        def job(self, *args, **callbacks):
            self.callbacks = callbacks
            return Job()
    model = Maker()
    st = Stream(model, stop=[], streaming=True, flush_seconds=0.05)
    job = st.job("ab", 10, 1.0, 0, 1.0, 0)
    assert set(model.callbacks) == {"on_first", "on_end"}
    job.tokens = [0]
    model.callbacks["on_first"]()
    assert st.take(1) == (["a"], False)
    job.tokens += [1, 2]
    assert not st.ready.is_set() and st.take(1, interval=0.01) == (["b", "c"], False)
    job.tokens.append(3)
    model.callbacks["on_end"]()
    assert st.take(1) == (["\n"], True) and st.text == "abc\n"
    for stop, flush in ((["c"], 0.05), ([], 0.0)):  # a stop string, or a wake per piece: a call per token
        Stream(model, stop=stop, streaming=True, flush_seconds=flush).job("ab", 10, 1.0, 0, 1.0, 0)
        assert set(model.callbacks) == {"on_token"}


def test_stream_without_flush_interval_wakes_writer_per_piece_and_times_out():
    st = Stream(Model(), stop=[], streaming=True)
    st.on_token(1)
    assert st.take(1) == (["b"], False)
    st.on_token(2)
    assert st.ready.is_set() and st.take(1) == (["c"], False)
    with pytest.raises(TimeoutError):
        st.take(0.05)
    flushing = Stream(Model(), stop=[], streaming=True, flush_seconds=0.01)
    flushing.on_token(0)
    flushing.take(1)
    with pytest.raises(TimeoutError):  # no piece for longer than the timeout, while polling
        for _ in range(20):
            flushing.take(0.05)


def test_stream_stop_string_ends_without_sending_it():
    st = Stream(Model(), stop=["c\n"], streaming=True)
    assert st.on_token(0) and st.on_token(2)
    assert st.on_token(3) is False and st.text == "a"


def test_sse_write_budget_stretches_the_interval_past_its_share_of_streams(monkeypatch):
    from services.runtime import streaming
    monkeypatch.setattr(streaming, "WRITES_PER_SECOND", 800.0)
    monkeypatch.setattr(streaming.OPEN, "count", 4)
    assert streaming.interval(0.01) == 0.01  # 4 streams x 100 writes/s: within the budget
    monkeypatch.setattr(streaming.OPEN, "count", 32)
    assert abs(streaming.interval(0.01) - 0.04) < 1e-9  # 32 streams share 800 writes/s: 25 each
    monkeypatch.setattr(streaming, "WRITES_PER_SECOND", 0.0)
    assert streaming.interval(0.01) == 0.01  # no budget


def test_a_generation_of_several_streams_gives_each_piece_once_and_cancels_its_jobs_at_the_end():
    """The pacing every streaming protocol shares (runtime/streaming.py): the first running stream paces,
    the others are drained at each write, an ended stream reports once, and the jobs are freed."""
    from types import SimpleNamespace

    from services.runtime.streaming import OPEN, Generation
    streams = [Stream(Model(), stop=[], streaming=True, flush_seconds=0.01) for _ in range(2)]
    jobs = [SimpleNamespace(tokens=[], stop_reason=None, cancelled=False) for _ in streams]
    streams[0].on_token(0)
    streams[1].on_token(1)
    streams[1].on_token(None)  # the second ends before the first write
    gen = iter(Generation(streams, jobs, timeout=1.0, flush_seconds=0.01))
    first = next(gen)
    assert OPEN.count == 1
    assert [(u.index, u.pieces, u.ended) for u in first] == [(0, ["a"], False), (1, ["b"], True)]
    streams[0].on_token(2)
    streams[0].on_token(None)
    assert [(u.index, u.pieces, u.ended) for u in next(gen)] == [(0, ["c"], True)]
    with pytest.raises(StopIteration):
        next(gen)
    assert OPEN.count == 0 and all(j.cancelled for j in jobs)


def test_stream_take_waits_the_interval_it_is_given():
    st = Stream(Model(), stop=[], streaming=True, flush_seconds=0.01)
    st.on_token(0)
    st.take(1)
    st.on_token(1)
    t0 = time.monotonic()
    assert st.take(1, interval=0.08) == (["b"], False)
    assert time.monotonic() - t0 >= 0.07
