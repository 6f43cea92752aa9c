"""Codecs: the binary tensor extension round-trips against tritonclient's own serializers; BYTES; errors."""
from __future__ import annotations

import numpy as np
import orjson
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from services import v2_tensors
from services.runtime import codec
from services.runtime.errors import ApiError


def test_bytes_serialization_matches_tritonclient():
    arr = np.array([b"hello", "Grüße".encode(), b""], dtype=object)
    ours = v2_tensors.serialize_bytes(arr)
    assert ours == serialize_byte_tensor(arr).item()
    np.testing.assert_array_equal(v2_tensors.deserialize_bytes(ours, 3, "t"), deserialize_bytes_tensor(ours))


def test_binary_request_round_trip():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    s = np.array([b"a", b"bc"], dtype=object)
    raw_s = v2_tensors.serialize_bytes(s)
    header = orjson.dumps({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [3, 4], "parameters": {"binary_data_size": x.nbytes}},
        {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw_s)}}]})
    body = header + x.tobytes() + raw_s
    req, tail = codec.split_binary(body, str(len(header)))
    got = codec.v2_decode_inputs(req, tail)
    np.testing.assert_array_equal(got["x"], x)
    assert list(got["s"]) == [b"a", b"bc"]


def test_binary_response_layout():
    outs = {"p": np.array([[0.25, 0.75]], np.float32), "label": np.array([b"pos"], dtype=object)}
    body, headers = codec.v2_encode_outputs("m", "1", outs, {"parameters": {"binary_data_output": True}}, "id1")
    n = int(headers["Inference-Header-Content-Length"])
    head = orjson.loads(body[:n])
    assert head["id"] == "id1" and all("data" not in o for o in head["outputs"])
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    tail = body[n:]
    np.testing.assert_array_equal(np.frombuffer(tail[:sizes[0]], np.float32), [0.25, 0.75])
    assert list(deserialize_bytes_tensor(tail[sizes[0]:])) == [b"pos"]


@pytest.mark.parametrize("req,tail,match", [
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]}, b"1234",
     "binary_data_size"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}}]}, b"1234",
     "4 bytes"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0]}]}, b"", "values for shape"),
    ({"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}, b"", "unknown datatype"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}, b"", "non-negative"),
    ({"inputs": []}, b"", "non-empty"),
    ({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]},
     b"\x09\x00\x00\x00ab", "runs past"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ["NaN"]}]}, b"", "NaN"),
])
def test_bad_v2_inputs_are_400(req, tail, match):
    with pytest.raises(ApiError, match=match) as err:
        codec.v2_decode_inputs(req, tail)
    assert err.value.status == 400


def test_header_length_outside_body():
    with pytest.raises(ApiError, match="outside"):
        codec.split_binary(b"{}", "99")
    with pytest.raises(ApiError, match="integer"):
        codec.split_binary(b"{}", "x")


def test_tf_serving_b64_and_strings():
    arr = codec.tfs_value([{"b64": "aGk="}, "yo"], "t", "BYTES")
    assert list(arr) == [b"hi", b"yo"]
    with pytest.raises(ApiError, match="base64"):
        codec.tfs_value([{"b64": "!!"}], "t", "BYTES")


def test_ragged_tf_serving_strings_are_400():
    with pytest.raises(ApiError, match="one shape"):
        codec.tfs_value(["abc", []], "text", "BYTES")


def test_v2_request_parameters_null_means_none_and_other_types_are_refused():
    assert codec.v2_check_request({"inputs": [], "parameters": None}, ["y"]) == {}
    assert codec.v2_check_request({"inputs": []}, ["y"]) == {}
    with pytest.raises(ApiError) as e:
        codec.v2_check_request({"inputs": [], "parameters": [1]}, ["y"])
    assert e.value.field == "parameters"
    with pytest.raises(ApiError) as e:
        codec.v2_check_request({"inputs": [], "outputs": [{"name": "nope"}]}, ["y"])
    assert e.value.field == "outputs"
