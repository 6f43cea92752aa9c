"""Optional API keys: ``Authorization: Bearer KEY`` checked in constant time against keys from
``GATEWAY_API_KEYS`` (comma-separated) and/or ``GATEWAY_API_KEYS_FILE`` (one per line). No keys: open."""
from __future__ import annotations

import hashlib
import hmac

from services.settings import GatewaySettings


def load_keys(settings: GatewaySettings) -> list[bytes]:
    keys = [k.strip() for k in settings.api_keys.split(",") if k.strip()]
    path = settings.api_keys_file
    if path:
        with open(path, encoding="utf-8") as f:
            keys += [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    # compare digests, so the comparison time does not depend on the key length either
    return [hashlib.sha256(k.encode()).digest() for k in keys]


def presented_key(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def valid(key: str | None, keys: list[bytes]) -> bool:
    if key is None:
        return False
    digest = hashlib.sha256(key.encode()).digest()
    ok = False
    for k in keys:  # check every key: no early exit
        ok |= hmac.compare_digest(digest, k)
    return ok


def key_id(key: str) -> str:
    """A short, non-reversible name for a key (for rate-limit buckets and logs; never the key itself)."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]
