"""Which headers cross the gateway (``app.py``)."""
from __future__ import annotations

# never passed on in either direction: they describe one connection, not the message
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
              b"trailers", b"transfer-encoding", b"upgrade", b"host", b"server", b"date"}
# the client's headers a backend gets (plus the gateway's X-Request-ID and X-Forwarded-For)
FORWARD = {b"content-type", b"content-encoding", b"accept", b"accept-encoding", b"inference-header-content-length"}
# the backend's headers the client does not get: the request id is the gateway's own (the backend echoes it)
DROPPED = HOP_BY_HOP | {b"x-request-id"}

