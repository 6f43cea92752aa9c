"""Which headers cross the gateway, for the full path (``app.py``) and the fast path (``fastpath.py``) alike."""
from __future__ import annotations

import random

# never passed on in either direction: they describe one connection, not the message
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
              b"trailers", b"transfer-encoding", b"upgrade", b"host", b"server", b"date"}
# the client's headers a backend gets (plus the gateway's X-Request-ID and X-Forwarded-For)
FORWARD = {b"content-type", b"content-encoding", b"accept", b"accept-encoding", b"inference-header-content-length"}
# the backend's headers the client does not get: the request id is the gateway's own (the backend echoes it)
DROPPED = HOP_BY_HOP | {b"x-request-id"}


def request_id(sent: bytes | None) -> bytes:
    """The caller's X-Request-ID when short and printable, else a new one. It must be unique, not secret:
    Python's generator (reseeded in every forked worker) costs no system call, where os.urandom costs one."""
    if sent and len(sent) <= 128 and sent.isascii() and sent.decode("latin-1").isprintable():
        return sent
    return b"%032x" % random.getrandbits(128)
