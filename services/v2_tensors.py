"""The binary form of a BYTES tensor (each element a 4-byte little-endian length, then its
bytes: what tritonclient writes and reads), for the services and the gateway's gRPC alike. No model code here:
the gateway imports it without ONNX Runtime."""
from __future__ import annotations

import struct

import numpy as np

from modelcore.datatypes import BY_V2
from services.runtime.errors import ApiError


def bytes_tensor(items) -> np.ndarray:
    """A 1-D BYTES tensor (object array) of these items: numpy would make fixed-width bytes of a plain list."""
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def tensor_of(values: list, datatype: str) -> np.ndarray:
    """A 1-D tensor of these values in a v2 datatype."""
    return bytes_tensor(values) if datatype == "BYTES" else np.asarray(values, BY_V2[datatype].numpy)


def raw_bytes(arr: np.ndarray, datatype: str) -> bytes:
    """A tensor's bytes in the binary tensor extension (BYTES length-prefixed, numbers little-endian)."""
    return serialize_bytes(arr) if datatype == "BYTES" else np.ascontiguousarray(arr).tobytes()


def serialize_bytes(arr: np.ndarray) -> bytes:
    parts = []
    for item in arr.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes(buf: bytes, count: int, field: str) -> np.ndarray:
    out, pos = [], 0
    while pos < len(buf):
        if pos + 4 > len(buf):
            raise ApiError(f"input '{field}': truncated BYTES element length", field=field)
        (n,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + n > len(buf):
            raise ApiError(f"input '{field}': BYTES element of {n} bytes runs past the data", field=field)
        out.append(buf[pos:pos + n])
        pos += n
    if len(out) != count:
        raise ApiError(f"input '{field}': {len(out)} BYTES elements for a shape of {count}", field=field)
    return bytes_tensor(out)
