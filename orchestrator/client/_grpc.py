"""The gRPC client: TF Serving's PredictionService and ModelService, no TensorFlow needed.

One channel per client, reused by every call (gRPC multiplexes calls over it). Predict goes
through the hand-written codec in _wire; the other methods use our protobuf messages.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf import text_format

from orchestrator.client._common import (
    BlockingReadiness,
    Examples,
    Inputs,
    ModelMetadata,
    VersionStatus,
    classification_from_proto,
    describe,
    inference_result,
    lone_name,
    metadata_from_proto,
    method_name,
    model_spec,
    regression_from_proto,
    status_from_proto,
    to_input,
)
from orchestrator.client._config import (
    DEFAULT_TIMEOUT_S,
    MAX_MESSAGE_BYTES,
    RetryPolicy,
    Tls,
    retry_after,
)
from orchestrator.client.errors import (
    ClientServingError,
    InvalidInput,
    ServingUnavailable,
    error_for_code,
)
from orchestrator.protocol import methods as _methods
from orchestrator.protocol import tensors
from orchestrator.protocol import wire as _wire
from orchestrator.protos import apis_pb2


@functools.lru_cache(maxsize=256)
def _spec_bytes(model: str, version: int | str | None, label: str | None, signature: str | None):
    """A serialised ModelSpec; services call the same few models over and over."""
    return model_spec(model, version, label, signature).SerializeToString()


def _stubs(channel: Any) -> dict[str, Any]:
    """A callable per method of a channel (blocking or grpc.aio), registered with the channel.

    Registered methods (what grpcio's generated stubs use) skip a per-call method lookup in
    gRPC's core. Predict travels as bytes: encoded and decoded by _wire without protobuf copies.
    """
    stubs = {
        m.name: channel.unary_unary(
            m.path,
            request_serializer=m.request.SerializeToString,
            response_deserializer=m.response.FromString,
            _registered_method=True,
        )
        for m in _methods.METHODS
    }
    stubs[_methods.PREDICT.name] = channel.unary_unary(
        _methods.PREDICT.path, _registered_method=True
    )
    return stubs


class _GrpcBase:
    """Configuration, requests and answers shared by the blocking and the asyncio client."""

    def __init__(
        self,
        address: str,
        *,
        tls: Tls | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        keepalive_time_s: float = 60.0,
        keepalive_timeout_s: float = 20.0,
        headers: Mapping[str, str] | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.address = address.removeprefix("grpc://").removeprefix("dns:///")
        self.tls = tls
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._headers = tuple((k.lower(), v) for k, v in (headers or {}).items()) or None
        self._metadata_cache: dict[tuple, ModelMetadata] = {}
        self._layouts: dict[tuple, _wire.ResponseLayout] = {}  # of the last Predict answers
        self._predict_heads: dict[tuple, tuple[bytes, str]] = {}
        # Keepalive pings only while calls are in flight: idle pings more often than every 5
        # minutes make gRPC servers (TF Serving included) answer GOAWAY "too_many_pings".
        self._options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
            # Reconnect quickly after the server (re)starts instead of gRPC's 1 s..120 s.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
            # gRPC shares connections between equal channels process-wide; a pool per client
            # gives each client its own connection (closing one never disturbs another).
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if tls is not None and tls.server_name:
            self._options.append(("grpc.ssl_target_name_override", tls.server_name))
        self._options.extend(options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r}{', tls' if self.tls else ''})"

    def _credentials(self) -> grpc.ChannelCredentials | None:
        if self.tls is None:
            return None
        root, key, chain = self.tls.read()
        return grpc.ssl_channel_credentials(
            root_certificates=root, private_key=key, certificate_chain=chain
        )

    def _timeout(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else timeout_s

    def _error(self, exc: grpc.RpcError, model: str | None) -> ClientServingError:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
        err = error_for_code(code, details, model=model, address=self.address)
        if isinstance(err, ServingUnavailable):
            err.fix = f"is a TF Serving gRPC port listening at {self.address}?"
        return err

    # -- requests ---------------------------------------------------------------------------
    def _predict_head(self, key: tuple) -> tuple[bytes, str]:
        """(a PredictRequest's model_spec field, serialised; the model as errors name it).

        Per (model, version, label, signature), made on the first call with that key: a
        service calls the same few models over and over.
        """
        head = self._predict_heads.get(key)
        if head is None:
            model, version, label, signature = key
            spec = _spec_bytes(model, version, label, signature)
            head = (_wire.len_field(1, len(spec)) + spec, describe(model, version, label))
            if len(self._predict_heads) >= 256:
                self._predict_heads.clear()
            self._predict_heads[key] = head
        return head

    @staticmethod
    def _predict_request(
        spec_field: bytes, inputs: Mapping[str, Any], output_filter: Sequence[str] | None, who: str
    ) -> bytes:
        try:
            return _wire.encode_predict_request_after(spec_field, inputs, output_filter or ())
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"input {e}", model=who) from e

    @staticmethod
    def _example_request(cls, model, examples, context, version, label, signature):
        return cls(
            model_spec=model_spec(model, version, label, signature),
            input=to_input(examples, context),
        )

    @staticmethod
    def _multi_request(model, examples, tasks, context, version, label):
        request = apis_pb2.MultiInferenceRequest(input=to_input(examples, context))
        for signature, method in tasks:
            request.tasks.add(
                model_spec=model_spec(model, version, label, signature),
                method_name=method_name(method),
            )
        return request

    @staticmethod
    def _reload_request(config: Any) -> apis_pb2.ReloadConfigRequest:
        if isinstance(config, apis_pb2.ModelServerConfig):
            ours = config
        elif isinstance(config, str):
            ours = text_format.Parse(config, apis_pb2.ModelServerConfig())
        elif hasattr(config, "SerializeToString"):  # tensorflow_serving's own ModelServerConfig
            ours = apis_pb2.ModelServerConfig.FromString(config.SerializeToString())
        else:
            raise TypeError("config is a ModelServerConfig message or its text form")
        return apis_pb2.ReloadConfigRequest(config=ours)

    def _reload_result(self, response: apis_pb2.ReloadConfigResponse) -> None:
        if response.status.error_code:
            raise error_for_code(
                response.status.error_code, response.status.error_message, address=self.address
            )

    @staticmethod
    def _needs_signature(inputs: Inputs) -> bool:
        """A lone value needs the input's name; Python values need the declared dtypes."""
        if type(inputs) is not dict and not isinstance(inputs, Mapping):
            return True
        for v in inputs.values():
            if type(v) is not np.ndarray and not isinstance(v, (np.ndarray, tensors.TensorProto)):
                return True
        return False

    @staticmethod
    def _typed_inputs(
        meta: ModelMetadata, signature: str | None, inputs: Inputs, model: str
    ) -> dict[str, Any]:
        """Name a lone value; cast lists and scalars to the signature's dtypes, as REST does.

        numpy arrays keep their dtype: the caller chose it (a mismatch is the server's
        INVALID_ARGUMENT, as with TF Serving).
        """
        sig = meta.signature(signature)
        if not isinstance(inputs, Mapping):
            inputs = {lone_name(list(sig.inputs), "inputs", signature, model): inputs}
        out: dict[str, Any] = {}
        for name, value in inputs.items():
            spec = sig.inputs.get(name)
            if (
                spec is not None
                and spec.dtype is not None
                and not isinstance(value, (np.ndarray, tensors.TensorProto))
            ):
                try:
                    value = tensors.as_array(value, spec.dtype)
                except (TypeError, ValueError) as e:
                    raise InvalidInput(f"input {name!r}: {e}", model=model) from e
            out[name] = value
        return out


class GrpcClient(BlockingReadiness, _GrpcBase):
    """Blocking client for TF Serving's gRPC API (port 8500), safe to share between threads.

    Every method takes the model name first; `version` or `label`, and `signature`, select
    per call. `timeout_s` is the whole call's deadline, retries included.
    """

    def __init__(
        self,
        address: str,
        *,
        tls: Tls | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        keepalive_time_s: float = 60.0,
        keepalive_timeout_s: float = 20.0,
        headers: Mapping[str, str] | None = None,
        options: Sequence[tuple[str, Any]] = (),
        channel: grpc.Channel | None = None,
    ) -> None:
        super().__init__(
            address,
            tls=tls,
            timeout_s=timeout_s,
            retry=retry,
            max_message_bytes=max_message_bytes,
            keepalive_time_s=keepalive_time_s,
            keepalive_timeout_s=keepalive_timeout_s,
            headers=headers,
            options=options,
        )
        if channel is None:
            creds = self._credentials()
            if creds is None:
                channel = grpc.insecure_channel(self.address, options=self._options)
            else:
                channel = grpc.secure_channel(self.address, creds, options=self._options)
        self._channel = channel
        self._closed = False
        self._stubs = _stubs(channel)

    # -- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        method: _methods.Method,
        request: Any,
        *,
        model: str | None,
        timeout_s: float | None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """One call under the client's deadline and retry policy (see _config.call).

        The first try is made here, without a closure or the retry machinery: that is the
        whole of a call that succeeds.
        """
        stub = self._stubs[method.name]
        headers = self._headers
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        try:
            return stub(request, timeout=timeout, metadata=headers)
        except grpc.RpcError as e:
            first = self._error(e, model)
            policy = retry or self.retry
            if not isinstance(first, ServingUnavailable) or policy.attempts <= 1:
                raise first from e
            first.__cause__ = e  # as `raise first from e` sets it

        def attempt(remaining: float) -> Any:
            try:
                return stub(request, timeout=remaining, metadata=headers)
            except grpc.RpcError as e:
                raise self._error(e, model) from e

        return retry_after(
            first, attempt, policy, timeout, deadline,
            what=method.name, model=model, address=self.address,
        )  # fmt: skip

    def _model_metadata(self, model, version, label, timeout_s) -> ModelMetadata:
        key = (model, version, label)
        meta = self._metadata_cache.get(key)
        if meta is None:
            meta = self.metadata(model, version=version, label=label, timeout_s=timeout_s)
            self._metadata_cache[key] = meta
        return meta

    # -- PredictionService ------------------------------------------------------------------
    def predict(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: int | str | None = None,
        label: str | None = None,
        signature: str | None = None,
        output_filter: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Run a predict signature; inputs are arrays/lists, or a dict of them by input name.

        A lone value goes to the signature's only input; lists and scalars take the
        signature's dtypes (both read once from the model's metadata, then cached). numpy
        arrays are sent as they are. Returns {output name: ndarray}.
        """
        if self._needs_signature(inputs):
            meta = self._model_metadata(model, version, label, timeout_s)
            inputs = self._typed_inputs(meta, signature, inputs, model)
        key = (model, version, label, signature)
        spec_field, who = self._predict_heads.get(key) or self._predict_head(key)
        raw = self._predict_request(spec_field, inputs, output_filter, who)
        answer = self._call(_methods.PREDICT, raw, model=who, timeout_s=timeout_s)
        return _wire.decode_predict_outputs(answer, self._layouts, key)

    def classify(
        self,
        model: str,
        examples: Examples,
        *,
        context: Mapping[str, Any] | None = None,
        version: int | str | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Classify tf.Examples given as {feature: value} dicts: {"classes", "scores"} [n, k]."""
        request = self._example_request(
            apis_pb2.ClassificationRequest, model, examples, context, version, label, signature
        )
        who = describe(model, version, label)
        response = self._call(_methods.CLASSIFY, request, model=who, timeout_s=timeout_s)
        return classification_from_proto(response.result)

    def regress(
        self,
        model: str,
        examples: Examples,
        *,
        context: Mapping[str, Any] | None = None,
        version: int | str | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Regress tf.Examples given as {feature: value} dicts: {"outputs": float32 [n]}."""
        request = self._example_request(
            apis_pb2.RegressionRequest, model, examples, context, version, label, signature
        )
        who = describe(model, version, label)
        response = self._call(_methods.REGRESS, request, model=who, timeout_s=timeout_s)
        return regression_from_proto(response.result)

    def multi_inference(
        self,
        model: str,
        examples: Examples,
        tasks: Sequence[tuple[str, str]],
        *,
        context: Mapping[str, Any] | None = None,
        version: int | str | None = None,
        label: str | None = None,
        timeout_s: float | None = None,
    ) -> list[dict[str, Any]]:
        """Several classify/regress signatures over the same examples in one call.

        `tasks` are (signature name, "classify" | "regress"); results come in task order.
        """
        request = self._multi_request(model, examples, tasks, context, version, label)
        who = describe(model, version, label)
        response = self._call(_methods.MULTI_INFERENCE, request, model=who, timeout_s=timeout_s)
        return [inference_result(r) for r in response.results]

    def metadata(
        self,
        model: str,
        *,
        version: int | str | None = None,
        label: str | None = None,
        timeout_s: float | None = None,
    ) -> ModelMetadata:
        request = apis_pb2.GetModelMetadataRequest(
            model_spec=model_spec(model, version, label), metadata_field=["signature_def"]
        )
        who = describe(model, version, label)
        response = self._call(_methods.GET_MODEL_METADATA, request, model=who, timeout_s=timeout_s)
        return metadata_from_proto(response)

    # -- ModelService -----------------------------------------------------------------------
    def status(
        self,
        model: str,
        *,
        version: int | str | None = None,
        label: str | None = None,
        timeout_s: float | None = None,
    ) -> list[VersionStatus]:
        return self._status(model, version, label, timeout_s, None)

    def _status(self, model, version, label, timeout_s, retry) -> list[VersionStatus]:
        request = apis_pb2.GetModelStatusRequest(model_spec=model_spec(model, version, label))
        who = describe(model, version, label)
        response = self._call(
            _methods.GET_MODEL_STATUS, request, model=who, timeout_s=timeout_s, retry=retry
        )
        return status_from_proto(response)

    @property
    def _endpoint(self) -> str:
        return self.address

    def reload_config(self, config: Any, *, timeout_s: float | None = None) -> None:
        """Replace the server's whole model config (models left out are unloaded).

        `config` is our ModelServerConfig, tensorflow_serving's, or its text form.
        """
        request = self._reload_request(config)
        response = self._call(
            _methods.HANDLE_RELOAD_CONFIG, request, model=None, timeout_s=timeout_s
        )
        self._reload_result(response)
