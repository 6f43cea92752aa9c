"""gRPC on the gateway's host, on grpcio's asyncio server in the gateway's event loop: TF Serving's
PredictionService and ModelService (``GRPC_TFS_PORT``, 8500) and the Open Inference Protocol v2's
GRPCInferenceService (``GRPC_V2_PORT``, 8001). The messages are our own minimal copies of those protocols
(``protos/``), so serving needs no TensorFlow.

Each RPC becomes the HTTP request that means the same and runs through the gateway's own ASGI app in this
process: gRPC gets HTTP's API key check (the ``authorization`` metadata), size and rate limits, metrics, request
ids, routing and error messages, with no second network hop. Tensors reach the services as v2's binary tensor
extension, so raw bytes pass through untouched. HTTP statuses become gRPC status codes (``grpc_status``); the
call's deadline bounds the whole request and reaches the model as v2's ``timeout`` parameter.
"""
from __future__ import annotations

import asyncio
import math
from urllib.parse import quote

import grpc
import numpy as np
import orjson
from google.protobuf import json_format

from modelcore.datatypes import BY_V2, TABLE
from services.gateway.grpc_status import grpc_status
from services.gateway.protos import inference_pb2 as v2
from services.gateway.protos import inference_pb2_grpc as v2_grpc
from services.gateway.protos import tensorflow_serving_pb2 as tfs
from services.gateway.protos import tensorflow_serving_pb2_grpc as tfs_grpc
from services.v2_tensors import deserialize_bytes, raw_bytes, tensor_of

Code = grpc.StatusCode
FORWARDED_METADATA = ("authorization", "x-request-id", "traceparent", "tracestate")
# TF Serving's DataType enum value -> the datatype (modelcore.datatypes names each by its enum name)
BY_TF_VALUE = {tfs.DataType.Value(d.tf_enum): d for d in TABLE}


class Http:
    """The gateway's ASGI app, called in-process with one whole request on behalf of a gRPC call."""

    def __init__(self, app):
        self.app = app

    async def call(self, context, method: str, path: str, body: bytes = b"", headers: tuple = (),
                   accept: tuple[int, ...] = ()) -> tuple[int, dict[bytes, bytes], bytes]:
        """-> (status, headers, body); a status of 400 or more ends the call with its gRPC code and the HTTP
        error's message, unless ``accept`` names it."""
        sent = {k: v for k, v in (context.invocation_metadata() or ()) if k in FORWARDED_METADATA}
        head = [(k.encode(), v.encode("latin-1")) for k, v in sent.items() if isinstance(v, str)]
        head += [(b"content-length", str(len(body)).encode()), *headers]
        path, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "2", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                 "headers": head, "client": _peer(context.peer()), "server": None}
        delivered = False

        async def receive():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect: cancelling the call cancels this request
        answer: dict = {"status": 500, "headers": [], "body": []}

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"], answer["headers"] = message["status"], message.get("headers", [])
            else:
                answer["body"].append(message.get("body", b""))
        remaining = context.time_remaining()
        try:
            await asyncio.wait_for(self.app(scope, receive, send), remaining)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            await context.abort(Code.DEADLINE_EXCEEDED, f"the call's deadline passed ({method} {path})")
        out_headers = {k.lower(): v for k, v in answer["headers"]}
        if b"x-request-id" in out_headers:
            await context.send_initial_metadata((("x-request-id", out_headers[b"x-request-id"].decode()),))
        data = b"".join(answer["body"])
        status = answer["status"]
        if status >= 400 and status not in accept:
            await context.abort(*grpc_status(status, data))
        return status, out_headers, data

    async def json(self, context, method: str, path: str, body: dict | None = None, accept=()):
        status, _, data = await self.call(context, method, path, orjson.dumps(body) if body is not None else b"",
                                          accept=accept)
        return status, orjson.loads(data) if data else None

    async def infer(self, context, path: str, inputs: list[tuple[str, str, list[int], bytes]],
                    outputs: list[str], parameters: dict, request_id: str = "",
                    output_parameters: dict[str, dict] | None = None) -> tuple[dict, list[bytes]]:
        """v2 inference with every tensor in binary: ``inputs`` (name, datatype, shape, raw bytes) ->
        (the answer's JSON header, each output's raw bytes in order)."""
        remaining = context.time_remaining()
        if remaining is not None and "timeout" not in parameters:  # the deadline, for the decoder
            parameters = {**parameters, "timeout": max(1, int(remaining * 1e6))}
        header: dict = {"inputs": [{"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(r)}}
                                   for n, d, s, r in inputs],
                        "parameters": {**parameters, "binary_data_output": True}}
        if outputs:
            asked = output_parameters or {}
            header["outputs"] = [{"name": o, "parameters": {**asked.get(o, {}), "binary_data": True}} for o in outputs]
        if request_id:
            header["id"] = request_id
        head = orjson.dumps(header)
        _, headers, data = await self.call(context, "POST", path, head + b"".join(r for *_, r in inputs),
                                           headers=((b"inference-header-content-length", b"%d" % len(head)),))
        n = int(headers[b"inference-header-content-length"])
        answer, pos, raws = orjson.loads(data[:n]), n, []
        for o in answer["outputs"]:  # every one binary, as binary_data_output asked
            size = o["parameters"]["binary_data_size"]
            raws.append(data[pos:pos + size])
            pos += size
        return answer, raws


def _peer(peer: str | None):
    """grpc's ``ipv4:1.2.3.4:5678`` / ``ipv6:[::1]:5678`` -> an ASGI client (host, port), for the rate limit."""
    if not peer or ":" not in peer:
        return None
    host, _, port = peer.split(":", 1)[1].rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def _model_path(name: str, version: str = "", prefix: str = "/v2/models/") -> str:
    path = prefix + quote(name, safe="")
    return path + "/versions/" + quote(version, safe="") if version else path


def _value(param) -> object:
    """An InferParameter or ModelRepositoryParameter's value."""
    kind = param.WhichOneof("parameter_choice")
    value = getattr(param, kind) if kind else None
    return value.decode("latin-1") if isinstance(value, bytes) else value


class InferenceService(v2_grpc.GRPCInferenceServiceServicer):
    """Open Inference Protocol v2 over gRPC (what tritonclient.grpc calls)."""

    def __init__(self, http: Http):
        self.http = http

    async def ServerLive(self, request, context):
        await self.http.call(context, "GET", "/v2/health/live")
        return v2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        status, _, _ = await self.http.call(context, "GET", "/v2/health/ready", accept=(503,))
        return v2.ServerReadyResponse(ready=status == 200)

    async def ModelReady(self, request, context):
        # a model or version that is not there is not ready, as Triton answers
        status, _ = await self.http.json(context, "GET", _model_path(request.name, request.version) + "/ready",
                                         accept=(404, 503))
        return v2.ModelReadyResponse(ready=status == 200)

    async def ServerMetadata(self, request, context):
        _, meta = await self.http.json(context, "GET", "/v2")
        return json_format.ParseDict(meta, v2.ServerMetadataResponse(), ignore_unknown_fields=True)

    async def ModelMetadata(self, request, context):
        _, meta = await self.http.json(context, "GET", _model_path(request.name, request.version))
        return json_format.ParseDict(meta, v2.ModelMetadataResponse(), ignore_unknown_fields=True)

    async def ModelConfig(self, request, context):
        _, config = await self.http.json(context, "GET", _model_path(request.name, request.version) + "/config")
        return v2.ModelConfigResponse(config=json_format.ParseDict(config, v2.ModelConfig(),
                                                                   ignore_unknown_fields=True))

    async def ModelStatistics(self, request, context):
        path = _model_path(request.name, request.version) + "/stats" if request.name else "/v2/models/stats"
        _, stats = await self.http.json(context, "GET", path)
        return json_format.ParseDict(stats, v2.ModelStatisticsResponse(), ignore_unknown_fields=True)

    async def RepositoryIndex(self, request, context):
        _, index = await self.http.json(context, "POST", "/v2/repository/index", {"ready": request.ready})
        return json_format.ParseDict({"models": index}, v2.RepositoryIndexResponse(), ignore_unknown_fields=True)

    async def RepositoryModelLoad(self, request, context):
        await self._control(context, request, "load")
        return v2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        await self._control(context, request, "unload")
        return v2.RepositoryModelUnloadResponse()

    async def _control(self, context, request, action: str) -> None:
        params = {k: _value(p) for k, p in request.parameters.items()}
        await self.http.json(context, "POST", _model_path(request.model_name, prefix="/v2/repository/models/")
                             + "/" + action, {"parameters": params})

    async def ModelInfer(self, request, context):
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            await context.abort(Code.INVALID_ARGUMENT, f"raw_input_contents has {len(raw)} entries for "
                                                       f"{len(request.inputs)} inputs")
        inputs = []
        for i, t in enumerate(request.inputs):
            if t.parameters:
                await context.abort(Code.INVALID_ARGUMENT, f"input '{t.name}': tensor parameters (shared memory) "
                                                           "are not supported")
            if raw:
                data = raw[i]
            elif t.datatype in BY_V2 and BY_V2[t.datatype].v2_contents:
                values = list(getattr(t.contents, BY_V2[t.datatype].v2_contents))
                data = raw_bytes(tensor_of(values, t.datatype), t.datatype)
            else:
                await context.abort(Code.INVALID_ARGUMENT, f"input '{t.name}': datatype {t.datatype!r} needs "
                                                           "raw_input_contents")
            inputs.append((t.name, t.datatype, list(t.shape), data))
        output_parameters = {}
        for o in request.outputs:
            output_parameters[o.name] = {k: _value(p) for k, p in o.parameters.items()}
            if set(output_parameters[o.name]) - {"classification"}:
                await context.abort(Code.INVALID_ARGUMENT, f"output '{o.name}': of the output parameters only "
                                                           "classification is served (not shared memory)")
        params = {k: _value(p) for k, p in request.parameters.items()}
        answer, raws = await self.http.infer(context, _model_path(request.model_name, request.model_version)
                                             + "/infer", inputs, [o.name for o in request.outputs], params,
                                             request.id, output_parameters)
        out = v2.ModelInferResponse(model_name=answer["model_name"], model_version=answer.get("model_version", ""),
                                    id=request.id)
        for o in answer["outputs"]:
            out.outputs.add(name=o["name"], datatype=o["datatype"], shape=o["shape"])
        out.raw_output_contents.extend(raws)
        return out


class PredictionService(tfs_grpc.PredictionServiceServicer):
    """TF Serving's Predict and GetModelMetadata (what tensorflow-serving-api's stub calls)."""

    def __init__(self, http: Http):
        self.http = http

    async def Predict(self, request, context):
        version = await _spec_version(request.model_spec, context)
        inputs = []
        for alias in sorted(request.inputs):
            datatype, shape, data = await _from_tensor_proto(request.inputs[alias], alias, context)
            inputs.append((alias, datatype, shape, data))
        answer, raws = await self.http.infer(context, _model_path(request.model_spec.name, version) + "/infer",
                                             inputs, list(request.output_filter), {})
        out = tfs.PredictResponse()
        out.model_spec.name, out.model_spec.signature_name = answer["model_name"], "serving_default"
        out.model_spec.version.value = int(answer.get("model_version") or 0)
        for o, data in zip(answer["outputs"], raws, strict=False):
            out.outputs[o["name"]].CopyFrom(_to_tensor_proto(o["datatype"], o["shape"], data))
        return out

    async def GetModelMetadata(self, request, context):
        version = await _spec_version(request.model_spec, context)
        if list(request.metadata_field) != ["signature_def"]:
            await context.abort(Code.INVALID_ARGUMENT, "metadata_field must be ['signature_def'] (the only one "
                                                       f"served), not {list(request.metadata_field)}")
        _, meta = await self.http.json(context, "GET", _model_path(request.model_spec.name, version,
                                                                   "/v1/models/") + "/metadata")
        signatures = tfs.SignatureDefMap()
        for name, sig in meta["metadata"]["signature_def"]["signature_def"].items():
            target = signatures.signature_def[name]
            target.method_name = sig["method_name"]
            for side in ("inputs", "outputs"):
                for alias, info in sig[side].items():
                    t = getattr(target, side)[alias]
                    t.name, t.dtype = info["name"], tfs.DataType.Value(info["dtype"])
                    t.tensor_shape.dim.extend(tfs.TensorShapeProto.Dim(size=int(d["size"]))
                                              for d in info["tensor_shape"]["dim"])
        out = tfs.GetModelMetadataResponse()
        out.model_spec.name = meta["model_spec"]["name"]
        out.model_spec.version.value = int(meta["model_spec"]["version"])
        out.model_spec.signature_name = "serving_default"
        out.metadata["signature_def"].Pack(signatures)
        return out


class ModelService(tfs_grpc.ModelServiceServicer):
    """TF Serving's GetModelStatus."""

    def __init__(self, http: Http):
        self.http = http

    async def GetModelStatus(self, request, context):
        version = await _spec_version(request.model_spec, context)
        _, status = await self.http.json(context, "GET", _model_path(request.model_spec.name, version, "/v1/models/"))
        out = tfs.GetModelStatusResponse()
        for st in status["model_version_status"]:
            code = st["status"]["error_code"]
            out.model_version_status.add(
                version=int(st["version"]), state=tfs.ModelVersionStatus.State.Value(st["state"]),
                status=tfs.StatusProto(error_code=Code[code].value[0] if code in Code.__members__ else 2,
                                       error_message=st["status"]["error_message"]))
        return out


async def _spec_version(spec, context) -> str:
    if spec.signature_name not in ("", "serving_default"):
        await context.abort(Code.FAILED_PRECONDITION, f"Serving signature name: '{spec.signature_name}' not found "
                                                      "in signature def (signatures: ['serving_default'])")
    if spec.WhichOneof("version_choice") == "version_label":
        return spec.version_label  # resolved by the service, from the model's serving.json
    return str(spec.version.value) if spec.HasField("version") else ""


async def _from_tensor_proto(t, alias: str, context) -> tuple[str, list[int], bytes]:
    """A TensorProto -> (v2 datatype, shape, raw bytes)."""
    if t.dtype not in BY_TF_VALUE:
        known = sorted(d.tf_enum for d in TABLE)
        await context.abort(Code.INVALID_ARGUMENT, f"input '{alias}': dtype {tfs.DataType.Name(t.dtype)} is not "
                                                   f"supported (one of {known})")
        raise AssertionError("unreachable: abort raises")
    datatype = BY_TF_VALUE[t.dtype].v2
    shape = [d.size for d in t.tensor_shape.dim]
    count = math.prod(shape)
    if datatype != "BYTES" and t.tensor_content:
        return datatype, shape, t.tensor_content  # already the raw little-endian values
    if datatype == "FP16":
        values = np.asarray(t.half_val, np.uint16).view(np.float16)
    else:
        values = tensor_of(list(getattr(t, BY_V2[datatype].tf_values)), datatype)
    if len(values) == 1 and count != 1:  # TensorFlow's shorthand: one value fills the tensor
        values = np.repeat(values, count)
    return datatype, shape, raw_bytes(values, datatype)


def _to_tensor_proto(datatype: str, shape: list[int], data: bytes):
    t = tfs.TensorProto(dtype=tfs.DataType.Value(BY_V2[datatype].tf_enum))
    t.tensor_shape.dim.extend(tfs.TensorShapeProto.Dim(size=d) for d in shape)
    if datatype == "BYTES":
        t.string_val.extend(deserialize_bytes(data, math.prod(shape), "output"))
    else:
        t.tensor_content = data
    return t


async def start(app, host: str, tfs_port: int, v2_port: int, max_message_bytes: int) -> list:
    """The two gRPC servers (a port of 0: that one is off), bound and serving."""
    http = Http(app)
    servers = []
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", 4 * max_message_bytes)]
    for port, add in ((tfs_port, _add_tfs), (v2_port, _add_v2)):
        if port:
            server = grpc.aio.server(options=options)
            add(server, http)
            server.add_insecure_port(f"{host}:{port}")
            await server.start()
            servers.append(server)
    return servers


def _add_tfs(server, http: Http) -> None:
    tfs_grpc.add_PredictionServiceServicer_to_server(PredictionService(http), server)
    tfs_grpc.add_ModelServiceServicer_to_server(ModelService(http), server)


def _add_v2(server, http: Http) -> None:
    v2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(http), server)
