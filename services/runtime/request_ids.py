"""The one rule for X-Request-ID, shared by the gateway and the services: a caller's id is kept when short and
printable ASCII (it goes back into a response header and every log line), else a new one is made."""
from __future__ import annotations

import random

MAX_LENGTH = 128


def request_id(sent: bytes | None) -> bytes:
    """The caller's X-Request-ID when usable, else a new one. It must be unique, not secret: Python's generator
    (reseeded in every forked worker) costs no system call, where os.urandom or uuid4 costs one."""
    if sent and len(sent) <= MAX_LENGTH and sent.isascii() and sent.decode("latin-1").isprintable():
        return sent
    return b"%032x" % random.getrandbits(128)
