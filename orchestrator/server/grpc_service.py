"""TF Serving's gRPC services on a `grpc.aio` server.

`tensorflow.serving.PredictionService` (Predict, Classify, Regress, MultiInference,
GetModelMetadata) and `tensorflow.serving.ModelService` (GetModelStatus, HandleReloadConfigRequest)
are registered as generic handlers with our wire-compatible messages (orchestrator.protos.apis_pb2)
from the method table in orchestrator.protocol.methods. Errors carry TF Serving's codes and
messages (truncated at 1024 characters like grpc_status_util.cc).

Health (grpc.health.v1): always on. The overall service "" is SERVING only when every configured
model has an AVAILABLE version; each model's name is a service too; "tensorflow.serving.
ModelService" is SERVING while the server runs (PredictionService follows the overall state).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from orchestrator.logs import REQUEST_ID_METADATA, request_id
from orchestrator.protocol import methods as M
from orchestrator.protocol import wire as _wire
from orchestrator.protocol.tensors import from_tensor_proto
from orchestrator.protos import apis_pb2
from orchestrator.server import runner as r
from orchestrator.server.config import ConfigError, models_from_bytes
from orchestrator.server.core import Core
from orchestrator.server.guard import check_input_count, check_tensor_proto
from orchestrator.server.status import CODES, ServingStatus, invalid

log = logging.getLogger("tfs.grpc")
_STATE = {
    "UNKNOWN": 0,
    "START": 10,
    "LOADING": 20,
    "AVAILABLE": 30,
    "UNLOADING": 40,
    "END": 50,
}
_LIMIT = 1024


def _spec(spec: Any) -> tuple[str, int | None, str | None, str]:
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    label = spec.version_label if choice == "version_label" else None
    return spec.name, version, label, spec.signature_name


def _grpc_code(code: str) -> grpc.StatusCode:
    return grpc.StatusCode[code] if code in grpc.StatusCode.__members__ else grpc.StatusCode.UNKNOWN


def _message(text: str) -> str:
    return text if len(text) <= _LIMIT else text[:_LIMIT] + "...TRUNCATED"


def _examples(inp: Any) -> list[bytes]:
    """Serialized tf.Examples from an Input, the context merged into each (upstream's order)."""
    kind = inp.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in inp.example_list.examples]
    if kind == "example_list_with_context":
        ctx = inp.example_list_with_context.context.SerializeToString()
        return [ctx + e.SerializeToString() for e in inp.example_list_with_context.examples]
    raise invalid("Input is empty.")


def _request_id(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_METADATA:
            return request_id(value if isinstance(value, str) else None)
    return request_id(None)


def predict_response(name: str, version: int, signature_name: str, outputs: dict[str, Any],
                     encode: Callable[[Any], bytes]) -> bytes:  # fmt: skip
    """A PredictResponse's bytes, put together from the encoded tensors: no message objects to
    fill and serialize again (#17)."""
    parts: list[bytes] = []
    for alias, arr in outputs.items():
        key = alias.encode()
        value = encode(arr)
        entry = _wire.len_field(1, len(key)) + key + _wire.len_field(2, len(value))
        parts += (_wire.len_field(1, len(entry) + len(value)), entry, value)
    parts.append(_spec_field(name, version, signature_name))
    return b"".join(parts)


@functools.lru_cache(maxsize=1024)
def _spec_field(name: str, version: int, signature_name: str) -> bytes:
    """A PredictResponse's model_spec field (number 2), tag and length included."""
    spec = apis_pb2.ModelSpec()
    _fill_spec(spec, name, version, signature_name)
    data = spec.SerializeToString()
    return _wire.len_field(2, len(data)) + data


def _fill_spec(out: Any, name: str, version: int, signature_name: str) -> None:
    out.name = name
    out.version.value = version
    out.signature_name = signature_name


class GrpcApi:
    """tensor_content: Predict outputs as `tensor_content` bytes, else in the typed `*_val`
    fields (TF Serving's --enable_serialization_as_tensor_content, default false)."""

    def __init__(
        self,
        core: Core,
        reload: Callable[[list], Awaitable[None]],
        *,
        tensor_content: bool = False,
    ) -> None:
        self.core = core
        self._reload = reload
        self._encode = _wire.encode_tensor if tensor_content else _wire.encode_tensor_fields

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        impl = {
            M.PREDICT: (self.predict, "Predict"),
            M.CLASSIFY: (self.classify, "Classify"),
            M.REGRESS: (self.regress, "Regress"),
            M.MULTI_INFERENCE: (self.multi_inference, "MultiInference"),
            M.GET_MODEL_METADATA: (self.metadata, ""),
            M.GET_MODEL_STATUS: (self.status, ""),
            M.HANDLE_RELOAD_CONFIG: (self.reload_config, ""),
        }
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for method, (fn, api) in impl.items():
            by_service.setdefault(method.service, {})[method.name] = (
                grpc.unary_unary_rpc_method_handler(
                    self._wrap(fn, api),
                    request_deserializer=_parser(method.request),
                    # Predict answers with the response's bytes already (GrpcApi.predict)
                    response_serializer=None if method is M.PREDICT else method.response.SerializeToString,
                )
            )
        return [grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()]

    def _wrap(self, fn: Callable[[Any], Awaitable[Any]], api: str):  # type: ignore[no-untyped-def]
        metrics = self.core.metrics
        method = api.lower().replace("multiinference", "multi_inference")

        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(
                request, _Unparsable
            ):  # what C++ gRPC answers for bytes that do not parse
                await context.abort(grpc.StatusCode.INTERNAL, request.message)
            start = time.perf_counter()
            model = ""
            if api:
                spec = (
                    request.tasks[0].model_spec
                    if api == "MultiInference" and request.tasks
                    else getattr(request, "model_spec", None)
                )
                model = spec.name if spec is not None else ""
            rid = _request_id(context)
            context.set_trailing_metadata(((REQUEST_ID_METADATA, rid),))
            call = metrics.begin(model, method, "grpc", rid) if api else None
            try:
                resp = await fn(request)
            except ServingStatus as e:
                if api:
                    metrics.record_request(model, api, "GRPC", e.code, 0)
                metrics.end(call, e.code, start)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("gRPC %s: %s %s", api or "call", e.code, e.message)
                await context.abort(_grpc_code(e.code), _message(e.message))
            except ConfigError as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(str(e)))
            except Exception:
                metrics.end(call, "INTERNAL", start)
                raise
            if api:
                metrics.record_request(
                    model, api, "GRPC", "OK", (time.perf_counter() - start) * 1e6
                )
            metrics.end(call, "OK", start)
            return resp

        return handler

    # -- PredictionService ------------------------------------------------------------------------
    async def predict(self, req: Any) -> Any:
        name, version, label, sig = _spec(req.model_spec)
        servable = self.core.servable(name, version, label)
        inputs = {}
        check_input_count(len(req.inputs))
        for alias, proto in req.inputs.items():
            check_tensor_proto(alias, proto)
            try:
                inputs[alias] = from_tensor_proto(proto)
            except (ValueError, TypeError) as e:
                raise invalid(f"Could not parse input tensor {alias}: {e}") from None
        res = await self.core.predict(servable, sig, inputs, list(req.output_filter), req)
        return predict_response(name, servable.version, res.signature_name, res.outputs,
                                self._encode)  # fmt: skip

    async def classify(self, req: Any) -> Any:
        name, version, label, sig = _spec(req.model_spec)
        servable = self.core.servable(name, version, label)
        sig_name, result = await self.core.classify(servable, sig, _examples(req.input))
        resp = apis_pb2.ClassificationResponse()
        _fill_spec(resp.model_spec, name, servable.version, sig_name)
        _fill_classes(resp.result, result)
        return resp

    async def regress(self, req: Any) -> Any:
        name, version, label, sig = _spec(req.model_spec)
        servable = self.core.servable(name, version, label)
        sig_name, values = await self.core.regress(servable, sig, _examples(req.input))
        resp = apis_pb2.RegressionResponse()
        _fill_spec(resp.model_spec, name, servable.version, sig_name)
        for v in values.tolist():
            resp.result.regressions.add().value = v
        return resp

    async def multi_inference(self, req: Any) -> Any:
        if not req.tasks:
            raise invalid("MultiInferenceRequest must have at least one task.")
        model = ""
        for task in req.tasks:
            if not task.model_spec.name:
                raise invalid("Found ModelSpec with an empty model name.")
            if model and task.model_spec.name != model:
                raise invalid(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            model = task.model_spec.name
        name, version, label, _ = _spec(req.tasks[0].model_spec)
        for task in req.tasks[1:]:
            _, v2, l2, _ = _spec(task.model_spec)
            if (v2, l2) != (version, label):
                raise invalid(
                    "ModelSpecs in a MultiInferenceRequest must access the same model version."
                )
        servable = self.core.servable(name, version, label)
        tasks = [(t.model_spec.signature_name, t.method_name) for t in req.tasks]
        results = await self.core.multi_inference(servable, tasks, _examples(req.input))
        resp = apis_pb2.MultiInferenceResponse()
        for sig_name, method, result in results:
            out = resp.results.add()
            _fill_spec(out.model_spec, name, servable.version, sig_name)
            if method == r.CLASSIFY_METHOD:
                _fill_classes(out.classification_result, result)
            else:
                for v in result.tolist():
                    out.regression_result.regressions.add().value = v
        return resp

    async def metadata(self, req: Any) -> Any:
        if not req.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for f in req.metadata_field:
            if f != "signature_def":
                raise invalid(f"Metadata field {f} is not supported")
        name, version, label, _ = _spec(req.model_spec)
        servable = self.core.servable(name, version, label)
        resp = apis_pb2.GetModelMetadataResponse()
        resp.model_spec.name = name
        resp.model_spec.version.value = servable.version
        resp.metadata["signature_def"].CopyFrom(
            any_pb2.Any(
                type_url="type.googleapis.com/tensorflow.serving.SignatureDefMap",
                value=servable.signature_def_map_bytes(),
            )
        )
        return resp

    # -- ModelService ----------------------------------------------------------------------------
    async def status(self, req: Any) -> Any:
        if not req.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        name, version, label, _ = _spec(req.model_spec)
        resp = apis_pb2.GetModelStatusResponse()
        for vs in self.core.manager.status(name, version, label):
            out = resp.model_version_status.add()
            out.version = vs.version
            out.state = _STATE[vs.state]
            out.status.error_code = CODES[vs.error_code]
            out.status.error_message = vs.error_message
        return resp

    async def reload_config(self, req: Any) -> Any:
        resp = apis_pb2.ReloadConfigResponse()
        if req.config.WhichOneof("config") != "model_config_list":
            raise invalid(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported"
            )
        try:
            configs = models_from_bytes(
                req.config.SerializeToString(), source="ReloadConfigRequest"
            )
        except ConfigError as e:
            raise invalid(str(e)) from None
        await self._reload(configs)
        return resp


class _Unparsable:
    def __init__(self, message: str) -> None:
        self.message = message


def _parser(message_class: Any) -> Callable[[bytes], Any]:
    """FromString that hands bad bytes to the handler as a value instead of raising in grpc."""
    name = message_class.DESCRIPTOR.full_name.rsplit(".", 1)[-1]

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return _Unparsable(f"Failed to parse the request as a {name} message")

    return parse


def _fill_classes(out: Any, result: list[list[tuple[Any, float]]]) -> None:
    for row in result:
        c = out.classifications.add()
        for label, score in row:
            cls = c.classes.add()
            cls.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            cls.score = score


class Health:
    """grpc.health.v1 answers that follow model availability."""

    OVERALL = ""

    def __init__(self) -> None:
        from grpc_health.v1 import health

        self.servicer = health.aio.HealthServicer()
        self._last: dict[str, bool] = {}

    async def update(self, availability: dict[str, bool]) -> None:
        from grpc_health.v1 import health_pb2

        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        overall = bool(availability) and all(availability.values())
        states = dict(availability)
        states[self.OVERALL] = overall
        states["tensorflow.serving.PredictionService"] = overall
        states["tensorflow.serving.ModelService"] = True
        for name in self._last:
            if name not in states:
                states[name] = False
        for name, ok in states.items():
            if self._last.get(name) != ok:
                await self.servicer.set(name, serving if ok else not_serving)
                self._last[name] = ok

    def register(self, server: grpc.aio.Server) -> None:
        from grpc_health.v1 import health_pb2_grpc

        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)


__all__ = ["CODES", "GrpcApi", "Health"]
