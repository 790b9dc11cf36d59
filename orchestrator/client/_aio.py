"""The asyncio gRPC client (grpc.aio): GrpcClient's methods as coroutines.

The channel is opened on first use, inside the running event loop (grpc.aio channels belong
to the loop that made them). Use `async with AsyncGrpcClient(...) as client:` or `await
client.close()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from orchestrator.client._common import (
    NOT_READY,
    Examples,
    Inputs,
    ModelMetadata,
    VersionStatus,
    classification_from_proto,
    describe,
    failed_load,
    inference_result,
    metadata_from_proto,
    model_spec,
    regression_from_proto,
    status_from_proto,
)
from orchestrator.client._config import NO_RETRY, RetryPolicy, call_async
from orchestrator.client._grpc import _GrpcBase, _stubs
from orchestrator.client.errors import DeadlineExceeded
from orchestrator.protocol import methods as _methods
from orchestrator.protocol import wire as _wire
from orchestrator.protos import apis_pb2


class AsyncGrpcClient(_GrpcBase):
    """asyncio client for TF Serving's gRPC API; arguments as GrpcClient's."""

    _channel: grpc.aio.Channel | None = None
    _stubs: dict[str, Any]
    _closed = False

    def _open(self) -> dict[str, Any]:
        if self._closed:
            raise RuntimeError("AsyncGrpcClient is closed")
        if self._channel is None:
            creds = self._credentials()
            if creds is None:
                channel = grpc.aio.insecure_channel(self.address, options=self._options)
            else:
                channel = grpc.aio.secure_channel(self.address, creds, options=self._options)
            self._channel, self._stubs = channel, _stubs(channel)
        return self._stubs

    async def close(self) -> None:
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> AsyncGrpcClient:
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self,
        method: _methods.Method,
        request: Any,
        *,
        model: str | None,
        timeout_s: float | None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        stub = self._open()[method.name]
        headers = self._headers

        async def attempt(remaining: float) -> Any:
            try:
                return await stub(request, timeout=remaining, metadata=headers)
            except grpc.RpcError as e:
                raise self._error(e, model) from e

        return await call_async(
            attempt,
            retry or self.retry,
            self._timeout(timeout_s),
            what=method.name,
            model=model,
            address=self.address,
        )

    async def _model_metadata(self, model, version, label, timeout_s) -> ModelMetadata:
        key = (model, version, label)
        meta = self._metadata_cache.get(key)
        if meta is None:
            meta = await self.metadata(model, version=version, label=label, timeout_s=timeout_s)
            self._metadata_cache[key] = meta
        return meta

    async def predict(
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
        if self._needs_signature(inputs):
            meta = await self._model_metadata(model, version, label, timeout_s)
            inputs = self._typed_inputs(meta, signature, inputs, model)
        key = (model, version, label, signature)
        spec_field, who = self._predict_heads.get(key) or self._predict_head(key)
        raw = self._predict_request(spec_field, inputs, output_filter, who)
        answer = await self._call(_methods.PREDICT, raw, model=who, timeout_s=timeout_s)
        return _wire.decode_predict_outputs(answer, self._layouts, key)

    async def classify(
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
        request = self._example_request(
            apis_pb2.ClassificationRequest, model, examples, context, version, label, signature
        )
        who = describe(model, version, label)
        response = await self._call(_methods.CLASSIFY, request, model=who, timeout_s=timeout_s)
        return classification_from_proto(response.result)

    async def regress(
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
        request = self._example_request(
            apis_pb2.RegressionRequest, model, examples, context, version, label, signature
        )
        who = describe(model, version, label)
        response = await self._call(_methods.REGRESS, request, model=who, timeout_s=timeout_s)
        return regression_from_proto(response.result)

    async def multi_inference(
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
        request = self._multi_request(model, examples, tasks, context, version, label)
        who = describe(model, version, label)
        response = await self._call(
            _methods.MULTI_INFERENCE, request, model=who, timeout_s=timeout_s
        )
        return [inference_result(r) for r in response.results]

    async def metadata(
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
        response = await self._call(
            _methods.GET_MODEL_METADATA, request, model=who, timeout_s=timeout_s
        )
        return metadata_from_proto(response)

    async def status(
        self,
        model: str,
        *,
        version: int | str | None = None,
        label: str | None = None,
        timeout_s: float | None = None,
    ) -> list[VersionStatus]:
        return await self._status(model, version, label, timeout_s, None)

    async def _status(self, model, version, label, timeout_s, retry) -> list[VersionStatus]:
        request = apis_pb2.GetModelStatusRequest(model_spec=model_spec(model, version, label))
        who = describe(model, version, label)
        response = await self._call(
            _methods.GET_MODEL_STATUS, request, model=who, timeout_s=timeout_s, retry=retry
        )
        return status_from_proto(response)

    async def is_model_ready(
        self,
        model: str,
        *,
        version: int | str | None = None,
        label: str | None = None,
        timeout_s: float | None = None,
    ) -> bool:
        try:
            statuses = await self._status(model, version, label, timeout_s, NO_RETRY)
        except NOT_READY:
            return False
        return any(s.is_available for s in statuses)

    async def wait_until_available(
        self,
        model: str,
        *,
        version: int | str | None = None,
        label: str | None = None,
        timeout_s: float = 60.0,
        poll_interval_s: float = 0.25,
    ) -> list[VersionStatus]:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                statuses = await self._status(
                    model, version, label, min(remaining, self.timeout_s), NO_RETRY
                )
            except NOT_READY as e:
                last = str(e)
            else:
                ready = [s for s in statuses if s.is_available]
                if ready:
                    return ready
                failed = failed_load(statuses, model, self.address)
                if failed is not None:
                    raise failed
                last = ", ".join(f"version {s.version} {s.state}" for s in statuses) or "none"
            if time.monotonic() + poll_interval_s >= deadline:
                raise DeadlineExceeded(
                    f"waited {timeout_s:g}s for {describe(model, version, label)} to be "
                    f"AVAILABLE; last seen: {last}",
                    address=self.address,
                )
            await asyncio.sleep(poll_interval_s)

    async def reload_config(self, config: Any, *, timeout_s: float | None = None) -> None:
        request = self._reload_request(config)
        response = await self._call(
            _methods.HANDLE_RELOAD_CONFIG, request, model=None, timeout_s=timeout_s
        )
        self._reload_result(response)
