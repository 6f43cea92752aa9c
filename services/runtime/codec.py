"""Tensor codecs for the Open Inference Protocol v2 (JSON and the binary tensor data extension) and for
TF Serving's JSON (``{"b64": ...}`` for bytes).

Binary extension: the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by raw
tensor bytes, in the order of the inputs that carry ``parameters.binary_data_size``. BYTES elements are
each a 4-byte little-endian length followed by the bytes (what tritonclient writes and reads).
"""
from __future__ import annotations

import base64
import gzip
import zlib

import numpy as np
import orjson

from modelcore.datatypes import BY_V2, V2_NAMES, v2_of
from services.runtime.errors import ApiError, UnsupportedMediaType
from services.v2_tensors import bytes_tensor, deserialize_bytes, raw_bytes


def decompress(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding == "identity":
        return body
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, zlib.error, EOFError) as exc:
        raise ApiError(f"body could not be decompressed as {encoding}: {exc}", field="Content-Encoding") from None
    raise UnsupportedMediaType(f"unsupported Content-Encoding {encoding!r} (gzip, deflate)", field="Content-Encoding")


def parse_json(body: bytes, what: str = "body") -> dict:
    if not body:
        raise ApiError(f"request {what} is empty; expected a JSON object", field=what)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(f"request {what} is not valid JSON: {exc}", field=what) from None
    if not isinstance(obj, dict):
        raise ApiError(f"request {what} must be a JSON object", field=what)
    return obj


def split_binary(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """Return (JSON header, binary tail) of a v2 request."""
    if header_length is None:
        return parse_json(body), b""
    try:
        n = int(header_length)
    except ValueError:
        raise ApiError("Inference-Header-Content-Length must be an integer",
                       field="Inference-Header-Content-Length") from None
    if n < 0 or n > len(body):
        raise ApiError(f"Inference-Header-Content-Length {n} is outside the body of {len(body)} bytes",
                       field="Inference-Header-Content-Length", limit=len(body))
    return parse_json(body[:n], "inference header"), body[n:]


def v2_decode_inputs(req: dict, tail: bytes) -> dict[str, np.ndarray]:
    """Inputs of a v2 request as numpy arrays (object arrays of bytes for BYTES)."""
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ApiError("'inputs' must be a non-empty list of tensors", field="inputs")
    out, offset = {}, 0
    for i, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise ApiError(f"inputs[{i}] must be an object", field=f"inputs[{i}]")
        name, dtype, shape = t.get("name"), t.get("datatype"), t.get("shape")
        if not isinstance(name, str) or not name:
            raise ApiError(f"inputs[{i}].name must be a non-empty string", field=f"inputs[{i}].name")
        if name in out:
            raise ApiError(f"input '{name}' is given more than once", field=name)
        if not isinstance(dtype, str) or dtype not in BY_V2:
            raise ApiError(f"input '{name}': unknown datatype {dtype!r} (one of {V2_NAMES})",
                           field=f"{name}.datatype")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                   for d in shape)):
            raise ApiError(f"input '{name}': shape must be a list of non-negative integers", field=f"{name}.shape")
        count = int(np.prod(shape)) if shape else 1
        if count > 50_000_000:
            raise ApiError(f"input '{name}': {count} elements is too many", field=f"{name}.shape", limit=50_000_000)
        params = t.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(tail):
                raise ApiError(f"input '{name}': binary_data_size {size} does not fit the {len(tail) - offset} "
                               "bytes left in the body", field=f"{name}.binary_data_size")
            raw = tail[offset:offset + size]
            offset += size
            if dtype == "BYTES":
                arr = deserialize_bytes(raw, count, name)
            else:
                np_dtype = np.dtype(BY_V2[dtype].numpy)
                if size != count * np_dtype.itemsize:
                    raise ApiError(f"input '{name}': {size} bytes of binary data for shape {shape} of {dtype} "
                                   f"(expected {count * np_dtype.itemsize})", field=f"{name}.binary_data_size")
                arr = np.frombuffer(raw, dtype=np_dtype)
        else:
            if "data" not in t:
                raise ApiError(f"input '{name}' has neither 'data' nor binary_data_size", field=f"{name}.data")
            arr = _json_data(t["data"], dtype, name)
            if arr.size != count:
                raise ApiError(f"input '{name}': {arr.size} values for shape {shape} ({count} expected)",
                               field=f"{name}.data")
        out[name] = arr.reshape(shape)
    if offset != len(tail):
        raise ApiError(f"{len(tail) - offset} bytes of binary data are not claimed by any input",
                       field="binary_data_size")
    return out


def _json_data(data, dtype: str, name: str) -> np.ndarray:
    if dtype == "BYTES":
        flat = list(_flatten(data))
        if not all(isinstance(x, str) for x in flat):
            raise ApiError(f"input '{name}': BYTES data must be strings", field=f"{name}.data")
        return bytes_tensor([x.encode("utf-8") for x in flat])
    try:
        arr: np.ndarray = np.asarray(data, dtype=BY_V2[dtype].numpy).reshape(-1)
    except (ValueError, TypeError, OverflowError):
        raise ApiError(f"input '{name}': data is not a (nested) list of {dtype} numbers",
                       field=f"{name}.data") from None
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ApiError(f"input '{name}': data contains NaN or Infinity", field=f"{name}.data")
    return arr


def _flatten(x):
    if isinstance(x, list):
        for y in x:
            yield from _flatten(y)
    else:
        yield x


def v2_check_request(req: dict, output_names: list[str]) -> dict:
    """Reject a malformed ``outputs`` list or ``parameters`` object before any compute; -> the parameters."""
    params = req.get("parameters")
    if params is None:  # absent, or null as clients with optional fields send it (KServe's models allow it)
        params = {}
    if not isinstance(params, dict):
        raise ApiError("'parameters' must be an object", field="parameters")
    wanted = req.get("outputs")
    if wanted is not None:
        if not isinstance(wanted, list):
            raise ApiError("'outputs' must be a list of objects with a 'name'", field="outputs")
        for o in wanted:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise ApiError("each of 'outputs' must be an object with a 'name'", field="outputs")
            if o["name"] not in output_names:
                raise ApiError(f"unknown output '{o['name']}' (outputs: {sorted(output_names)})", field="outputs")
            _check_output_parameters(o)
    return params


OUTPUT_PARAMETERS = {"binary_data", "classification"}


def _check_output_parameters(o: dict) -> None:
    op = o.get("parameters")
    if op is None:
        return
    if not isinstance(op, dict):
        raise ApiError(f"output '{o['name']}': 'parameters' must be an object", field="outputs")
    unknown = sorted(set(op) - OUTPUT_PARAMETERS)
    if unknown:
        raise ApiError(f"output '{o['name']}': unknown parameter(s) {unknown} (taken: {sorted(OUTPUT_PARAMETERS)}; "
                       "shared memory is not served)", field="outputs")
    k = op.get("classification")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ApiError(f"output '{o['name']}': 'classification' must be a whole number of classes, 1 or more",
                       field="outputs", limit=1)


def classify(arr: np.ndarray, k: int, labels: list[str] | None, name: str) -> np.ndarray:
    """Triton's classification extension: each row's top ``k`` scores as ``"score:index[:label]"`` strings,
    highest first (BYTES, [batch, k], or [k] for an unbatched output)."""
    if arr.dtype.kind not in "fiu" or arr.ndim not in (1, 2):
        raise ApiError(f"output '{name}' is {v2_of(arr.dtype)} {list(arr.shape)}: classification needs scores of "
                       "shape [batch, classes]", field="outputs")
    rows = arr[None] if arr.ndim == 1 else arr
    top = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    out = np.empty(top.shape, dtype=object)
    for r, row in enumerate(top):
        for j, i in enumerate(row):
            out[r, j] = (f"{rows[r, i]:f}:{i}" + (f":{labels[i]}" if labels and i < len(labels) else "")).encode()
    return out[0] if arr.ndim == 1 else out


def v2_encode_outputs(model: str, version: str, outputs: dict[str, np.ndarray], req: dict,
                      request_id: str | None, labels: dict[str, list[str]] | None = None) -> tuple[bytes, dict]:
    """Encode a v2 response; binary for outputs that asked for it (or all, with binary_data_output), top-k
    labels for those that asked for ``classification``. ``req`` has passed ``v2_check_request``: its
    ``outputs`` and ``parameters`` are well formed."""
    all_binary = bool((req.get("parameters") or {}).get("binary_data_output"))
    wanted = req.get("outputs")
    if wanted:
        names = [o["name"] for o in wanted]
        binary_for = {}
        outputs = dict(outputs)
        for o in wanted:
            op = o.get("parameters") or {}
            binary_for[o["name"]] = bool(op.get("binary_data", all_binary))
            if op.get("classification"):
                outputs[o["name"]] = classify(outputs[o["name"]], op["classification"],
                                              (labels or {}).get(o["name"]), o["name"])
    else:
        names = list(outputs)
        binary_for = {n: all_binary for n in names}
    header: dict = {"model_name": model, "model_version": version, "outputs": []}
    if request_id:
        header["id"] = request_id
    blobs = []
    for n in names:
        arr = outputs[n]
        dtype = v2_of(arr.dtype)
        entry = {"name": n, "datatype": dtype, "shape": list(arr.shape)}
        if binary_for[n]:
            raw = raw_bytes(arr, dtype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            if dtype == "BYTES":
                entry["data"] = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
                                 for x in arr.reshape(-1)]
            else:
                entry["data"] = arr.reshape(-1).tolist()
        header["outputs"].append(entry)
    body = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return body, {"Content-Type": "application/json"}
    return body + b"".join(blobs), {"Content-Type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(len(body))}


# ------------------------------------------------------------------------------------- TF Serving JSON
def tfs_value(x, name: str, datatype: str):
    """One TF Serving JSON value (possibly nested) -> numpy, decoding ``{"b64": ...}``."""
    if datatype == "BYTES":
        flat = list(_flatten(x))
        out = []
        for v in flat:
            if isinstance(v, dict) and set(v) == {"b64"}:
                try:
                    out.append(base64.b64decode(v["b64"], validate=True))
                except (ValueError, TypeError):
                    raise ApiError(f"input '{name}': invalid base64", field=name) from None
            elif isinstance(v, str):
                out.append(v.encode("utf-8"))
            else:
                raise ApiError(f"input '{name}' must be strings (or {{\"b64\": ...}})", field=name)
        arr = bytes_tensor(out)
        shape = _shape_of(x)
        if int(np.prod(shape)) != arr.size:
            raise ApiError(f"input '{name}' must be a (nested) list of strings of one shape", field=name)
        return arr.reshape(shape)
    try:
        arr = np.asarray(x, dtype=BY_V2[datatype].numpy)
    except (ValueError, TypeError, OverflowError):
        raise ApiError(f"input '{name}' must be a (nested) list of numbers of one shape", field=name) from None
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ApiError(f"input '{name}' contains NaN or Infinity", field=name)
    return arr


def _shape_of(x) -> tuple:
    shape = []
    while isinstance(x, list):
        shape.append(len(x))
        x = x[0] if x else None
    return tuple(shape)


def tfs_jsonable(arr: np.ndarray):
    if arr.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b,
                            otypes=[object])(arr).tolist() if arr.size else arr.tolist()
    return arr.tolist()
