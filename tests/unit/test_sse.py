"""Server-sent events from the textgen app: every token once and in order through Flask's streaming response,
and a row freed when its reader leaves (HTTP framing on real gunicorn: integration/test_sse_http.py)."""
from __future__ import annotations

import time

from tests.conftest import sse_events


def test_textgen_stream_sends_every_token_in_order_and_frees_its_row_when_the_reader_leaves(clients):
    from services.runtime.generation import scheduler
    r = clients["textgen"].post("/api/generate", buffered=False,
                                json={"prompt": "ROMEO:", "max_tokens": 600, "seed": 4, "stream": True})
    writes = list(r.response)
    events = sse_events(b"".join(writes))
    tokens = [e for e in events if "token" in e]
    assert [e["index"] for e in tokens] == list(range(600)) and events[-1]["tokens"] == 600
    assert "".join(e["token"] for e in tokens) == events[-1]["text"]
    assert len(writes) < 600  # tokens made between two writes leave together

    # a reader that leaves: the response is closed, the request ends and the scheduler drops the row
    r = clients["textgen"].post("/api/generate", json={"prompt": "ROMEO:", "max_tokens": 4000, "seed": 4,
                                                       "stream": True}, buffered=False)
    it = iter(r.response)
    next(it)
    r.close()
    t0 = time.monotonic()
    while scheduler().active() and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert scheduler().active() == 0


