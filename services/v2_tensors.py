"""The v2 datatypes and the binary form of a BYTES tensor (each element a 4-byte little-endian length, then its
bytes: what tritonclient writes and reads), for the services and the gateway's gRPC alike. No model code here:
the gateway imports it without ONNX Runtime."""
from __future__ import annotations

import struct

import numpy as np

from services.runtime.errors import ApiError

NP_TO_V2 = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int64": "INT64", "int32": "INT32",
            "int16": "INT16", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL", "string": "BYTES"}
V2_TO_NP = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32,
            "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
            "UINT64": np.uint64, "BOOL": np.bool_, "BYTES": np.object_}


def bytes_tensor(items) -> np.ndarray:
    """A 1-D BYTES tensor (object array) of these items: numpy would make fixed-width bytes of a plain list."""
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def tensor_of(values: list, datatype: str) -> np.ndarray:
    """A 1-D tensor of these values in a v2 datatype."""
    return bytes_tensor(values) if datatype == "BYTES" else np.asarray(values, V2_TO_NP[datatype])


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
