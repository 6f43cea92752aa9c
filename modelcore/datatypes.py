"""Every tensor datatype the product serves, once: its name in the manifest, NumPy, the Open Inference Protocol
v2, ONNX Runtime, Triton's model config, TensorFlow Serving (the DataType enum's name and the TensorProto field
that holds its values), and v2 gRPC's InferTensorContents field. Every other lookup is derived from this table.
It imports neither protobuf nor ONNX Runtime, so training, the services and the gateway all read it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Datatype:
    manifest: str      # the manifest's "dtype"
    numpy: type        # what a tensor of it is in NumPy (object for strings)
    v2: str            # the Open Inference Protocol's datatype
    ort: str           # ONNX Runtime's NodeArg.type
    triton: str        # Triton model config's data_type
    tf_enum: str       # TF Serving's DataType name
    tf_values: str     # TensorProto field holding its values without tensor_content ("" = only tensor_content)
    v2_contents: str   # v2 gRPC InferTensorContents field ("" = raw_input_contents only)


TABLE = (
    Datatype("float32", np.float32, "FP32", "tensor(float)", "TYPE_FP32", "DT_FLOAT", "float_val", "fp32_contents"),
    Datatype("float64", np.float64, "FP64", "tensor(double)", "TYPE_FP64", "DT_DOUBLE", "double_val",
             "fp64_contents"),
    Datatype("float16", np.float16, "FP16", "tensor(float16)", "TYPE_FP16", "DT_HALF", "half_val", ""),
    Datatype("int64", np.int64, "INT64", "tensor(int64)", "TYPE_INT64", "DT_INT64", "int64_val", "int64_contents"),
    Datatype("int32", np.int32, "INT32", "tensor(int32)", "TYPE_INT32", "DT_INT32", "int_val", "int_contents"),
    Datatype("int16", np.int16, "INT16", "tensor(int16)", "TYPE_INT16", "DT_INT16", "int_val", "int_contents"),
    Datatype("int8", np.int8, "INT8", "tensor(int8)", "TYPE_INT8", "DT_INT8", "int_val", "int_contents"),
    Datatype("uint8", np.uint8, "UINT8", "tensor(uint8)", "TYPE_UINT8", "DT_UINT8", "int_val", "uint_contents"),
    Datatype("uint16", np.uint16, "UINT16", "tensor(uint16)", "TYPE_UINT16", "DT_UINT16", "int_val",
             "uint_contents"),
    Datatype("uint32", np.uint32, "UINT32", "tensor(uint32)", "TYPE_UINT32", "DT_UINT32", "uint32_val",
             "uint_contents"),
    Datatype("uint64", np.uint64, "UINT64", "tensor(uint64)", "TYPE_UINT64", "DT_UINT64", "uint64_val",
             "uint64_contents"),
    Datatype("bool", np.bool_, "BOOL", "tensor(bool)", "TYPE_BOOL", "DT_BOOL", "bool_val", "bool_contents"),
    Datatype("string", np.object_, "BYTES", "tensor(string)", "TYPE_STRING", "DT_STRING", "string_val",
             "bytes_contents"),
)

BY_V2 = {d.v2: d for d in TABLE}
BY_MANIFEST = {d.manifest: d for d in TABLE}
BY_ORT = {d.ort: d for d in TABLE}
BY_TF_ENUM = {d.tf_enum: d for d in TABLE}
BY_NUMPY = {np.dtype(d.numpy).name: d for d in TABLE if d.numpy is not np.object_}
MANIFEST_NAMES = [d.manifest for d in TABLE]
V2_NAMES = sorted(BY_V2)


def v2_of(dtype: np.dtype) -> str:
    """The v2 datatype of a NumPy array's dtype (object arrays hold BYTES); KeyError for one not served."""
    return "BYTES" if dtype.kind == "O" else BY_NUMPY[dtype.name].v2
