"""The REST client: TF Serving's HTTP/JSON API (port 8501), same methods as GrpcClient.

One requests.Session per client (keep-alive connection pool). JSON loses dtypes and names,
so the client reads the model's metadata once per model/version/label and casts outputs to
the declared dtypes and names a lone output like gRPC does: both clients return the same.
Predict uses the columnar form ({"inputs": ...}) by default; `predict_format="row"` sends
{"instances": [...]}.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
import requests
from google.protobuf import json_format
from requests.adapters import HTTPAdapter

from orchestrator.client._common import (
    BlockingReadiness,
    Examples,
    Inputs,
    ModelMetadata,
    Signature,
    VersionStatus,
    classification_arrays,
    describe,
    lone_name,
    signatures_from_proto,
)
from orchestrator.client._config import DEFAULT_TIMEOUT_S, RetryPolicy, Tls, call
from orchestrator.client.errors import (
    ClientServingError,
    DeadlineExceeded,
    InvalidInput,
    ServingUnavailable,
    Unauthenticated,
    error_for_http,
)
from orchestrator.protocol import tensors
from orchestrator.protos import apis_pb2

# -- JSON <-> numpy -------------------------------------------------------------------------


def _string_json(item: Any) -> Any:
    if isinstance(item, str):
        return item
    return {"b64": base64.b64encode(tensors._to_bytes(item)).decode("ascii")}


def to_json(value: Any) -> Any:
    """A JSON-able value for a tensor: nested lists, bytes as {"b64": ...}."""
    arr = tensors.as_array(value)
    kind = arr.dtype.kind
    if kind in "OSU":
        flat = [_string_json(s) for s in arr.ravel().tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(arr.shape).tolist()
    if kind == "c":
        raise TypeError("JSON cannot carry complex tensors: use GrpcClient")
    if kind not in "biuf":  # bfloat16, float8 ...
        arr = arr.astype(np.float32)
    return arr.tolist()


def _is_b64(obj: Any) -> bool:
    return isinstance(obj, dict) and set(obj) == {"b64"}


def _strings(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_strings(o) for o in obj]
    if _is_b64(obj):
        return base64.b64decode(obj["b64"])
    if isinstance(obj, str):
        return obj.encode()
    return obj


def _has_strings(obj: Any) -> bool:
    while isinstance(obj, list) and obj:
        obj = obj[0]
    return isinstance(obj, str) or _is_b64(obj)


def from_json(obj: Any, dtype: np.dtype | None = None) -> np.ndarray:
    """An ndarray from JSON, cast to `dtype` when the signature declared one."""
    if (dtype is not None and dtype.kind == "O") or _has_strings(obj):
        return np.array(_strings(obj), dtype=object)
    if dtype is not None and dtype.kind not in "biuc":  # floats, bfloat16: null reads as NaN
        return np.asarray(obj, dtype=np.float64).astype(dtype)
    if dtype is not None and dtype.kind in "iu":
        try:  # straight to the integer type: via float64, 2**64-1 would round and wrap to 0
            return np.array(obj, dtype=dtype)
        except (OverflowError, ValueError, TypeError):
            pass
    arr = np.asarray(obj)
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr


def _json_value(value: Any) -> Any:
    """A feature value for classify/regress JSON: numbers, strings, {"b64"}, or lists."""
    if isinstance(value, (str, bytes)):
        return _string_json(value)
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        return to_json(np.asarray(value, dtype=object))
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64).tolist()
    return arr.astype(np.float64).tolist()


def _example_json(features: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _json_value(value) for name, value in features.items()}


class RestClient(BlockingReadiness):
    """Blocking client for TF Serving's REST API, safe to share between threads.

    Methods and arguments are GrpcClient's (without multi_inference and reload_config, which
    TF Serving offers on gRPC only). `url` is e.g. "http://127.0.0.1:8501".
    """

    def __init__(
        self,
        url: str,
        *,
        tls: Tls | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        predict_format: Literal["columnar", "row"] = "columnar",
        pool_size: int = 16,
        session: requests.Session | None = None,
    ) -> None:
        if "://" not in url:
            url = ("https://" if tls else "http://") + url
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if predict_format not in ("columnar", "row"):
            raise ValueError("predict_format is 'columnar' or 'row'")
        self.url = url.rstrip("/")
        self.address = self.url
        self.tls = tls
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = retry or RetryPolicy()
        self.predict_format = predict_format
        self._metadata_cache: dict[tuple, ModelMetadata] = {}
        self._closed = False
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        session.headers.update({"Content-Type": "application/json", **(headers or {})})
        # Passed on every request: a session's `verify` loses to REQUESTS_CA_BUNDLE otherwise.
        self._verify: str | bool = True
        if tls is not None:
            if tls.ca_file is not None:
                self._verify = str(tls.ca_file)
            if tls.cert_file is not None:
                session.cert = (str(tls.cert_file), str(tls.key_file))
        self._session = session

    def __repr__(self) -> str:
        return f"RestClient({self.url!r})"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._session.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------
    def _path(self, model: str, version: int | str | None, label: str | None) -> str:
        if not model:
            raise ValueError("a model name is required")
        if version is not None and label is not None:
            raise ValueError("pass a version or a label, not both")
        path = f"{self.url}/v1/models/{quote(model, safe='')}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += f"/labels/{quote(label, safe='')}"
        return path

    def _request(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        model: str | None,
        timeout_s: float | None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        data = None if body is None else json.dumps(body).encode()
        return call(
            lambda remaining: self._send(method, url, data, model, remaining),
            retry or self.retry,
            timeout,
            what=f"{method} {url}",
            model=model,
            address=self.url,
        )

    def _send(self, method: str, url: str, data: bytes | None, model, remaining: float) -> Any:
        try:
            response = self._session.request(
                method,
                url,
                data=data,
                timeout=(min(self.connect_timeout_s, remaining), remaining),
                verify=self._verify,
            )
        except requests.exceptions.SSLError as e:
            raise Unauthenticated(f"TLS: {e}", model=model, address=self.url) from e
        except (requests.exceptions.ConnectionError, requests.exceptions.ConnectTimeout) as e:
            raise ServingUnavailable(
                f"cannot connect: {e}",
                model=model,
                address=self.url,
                fix=f"is a TF Serving REST port listening at {self.url}?",
            ) from e
        except requests.exceptions.Timeout as e:
            raise DeadlineExceeded(f"no answer in time: {e}", model=model, address=self.url) from e
        if response.status_code == 200:
            return response.json()
        raise self._http_error(response, model)

    def _http_error(self, response: requests.Response, model: str | None) -> ClientServingError:
        try:
            message = response.json().get("error") or response.text
        except ValueError:
            message = response.text or response.reason
        return error_for_http(response.status_code, message, model=model, address=self.url)

    # -- metadata ---------------------------------------------------------------------------
    def metadata(
        self,
        model: str,
        *,
        version: int | str | None = None,
        label: str | None = None,
        timeout_s: float | None = None,
    ) -> ModelMetadata:
        who = describe(model, version, label)
        body = self._request(
            "GET", self._path(model, version, label) + "/metadata", model=who, timeout_s=timeout_s
        )
        return _metadata_from_json(body)

    def _model_metadata(self, model, version, label, timeout_s) -> ModelMetadata:
        key = (model, version, label)
        meta = self._metadata_cache.get(key)
        if meta is None:
            meta = self.metadata(model, version=version, label=label, timeout_s=timeout_s)
            self._metadata_cache[key] = meta
        return meta

    # -- predict, classify, regress ---------------------------------------------------------
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
        """Run a predict signature; same arguments and result as GrpcClient.predict.

        `output_filter` is applied on our side: TF Serving's REST API has no such field.
        """
        who = describe(model, version, label)
        sig = self._model_metadata(model, version, label, timeout_s).signature(signature)
        if not isinstance(inputs, Mapping):
            lone_name(list(sig.inputs), "inputs", signature, who)
        try:
            body = self._predict_body(inputs, signature)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"input {e}", model=who) from e
        url = self._path(model, version, label) + ":predict"
        answer = self._request("POST", url, body, model=who, timeout_s=timeout_s)
        outputs = self._predict_outputs(answer, sig, signature, model)
        if output_filter:
            missing = [name for name in output_filter if name not in outputs]
            if missing:
                raise InvalidInput(
                    f"output tensor alias not found in signature: {missing}", model=who
                )
            outputs = {name: outputs[name] for name in output_filter}
        return outputs

    def _predict_body(self, inputs: Inputs, signature: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if signature:
            body["signature_name"] = signature
        if self.predict_format == "row":
            body["instances"] = _rows(inputs)
        elif isinstance(inputs, Mapping):
            body["inputs"] = {name: _named(name, value) for name, value in inputs.items()}
        else:
            body["inputs"] = to_json(inputs)
        return body

    def _predict_outputs(
        self, answer: dict[str, Any], sig: Signature, signature: str | None, model: str
    ) -> dict[str, np.ndarray]:
        names = list(sig.outputs)
        if "outputs" in answer:
            raw = answer["outputs"]
            if not (isinstance(raw, dict) and len(names) != 1):
                raw = {lone_name(names, "outputs", signature, model): raw}
            return {k: from_json(v, _dtype(sig, k)) for k, v in raw.items()}
        rows = answer.get("predictions", [])
        if rows and isinstance(rows[0], dict):
            return {k: from_json([r[k] for r in rows], _dtype(sig, k)) for k in rows[0]}
        name = lone_name(names, "outputs", signature, model)
        return {name: from_json(rows, _dtype(sig, name))}

    def _examples_body(self, examples: Examples, context, signature) -> dict[str, Any]:
        body: dict[str, Any] = {"examples": [_example_json(e) for e in examples]}
        if context is not None:
            body["context"] = _example_json(context)
        if signature:
            body["signature_name"] = signature
        return body

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
        who = describe(model, version, label)
        url = self._path(model, version, label) + ":classify"
        body = self._examples_body(examples, context, signature)
        answer = self._request("POST", url, body, model=who, timeout_s=timeout_s)
        pairs = [
            [(p[0], p[1]) if isinstance(p, list) else ("", p) for p in row]
            for row in answer.get("results", [])
        ]
        return classification_arrays(pairs)

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
        who = describe(model, version, label)
        url = self._path(model, version, label) + ":regress"
        body = self._examples_body(examples, context, signature)
        answer = self._request("POST", url, body, model=who, timeout_s=timeout_s)
        return {"outputs": np.asarray(answer.get("results", []), dtype=np.float32)}

    # -- status -----------------------------------------------------------------------------
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
        who = describe(model, version, label)
        body = self._request(
            "GET", self._path(model, version, label), model=who, timeout_s=timeout_s, retry=retry
        )
        return [
            VersionStatus(
                version=int(s.get("version", 0)),
                state=s.get("state", "UNKNOWN"),
                error_code=s.get("status", {}).get("error_code", "OK") or "OK",
                error_message=s.get("status", {}).get("error_message", ""),
            )
            for s in body.get("model_version_status", [])
        ]

    @property
    def _endpoint(self) -> str:
        return self.url


def _dtype(sig: Signature, name: str) -> np.dtype | None:
    spec = sig.outputs.get(name)
    return spec.dtype if spec is not None else None


def _named(name: str, value: Any) -> Any:
    try:
        return to_json(value)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name!r}: {e}") from e


def _rows(inputs: Inputs) -> list[Any]:
    """Row format: one entry per batch element; named inputs share the first dimension."""
    if not isinstance(inputs, Mapping):
        return to_json(inputs)
    columns = {name: _named(name, value) for name, value in inputs.items()}
    sizes = {name: len(col) if isinstance(col, list) else None for name, col in columns.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise ValueError(f"row format needs inputs with the same batch size, got {sizes}")
    n = next(iter(sizes.values()))
    return [{name: col[i] for name, col in columns.items()} for i in range(n or 0)]


def _metadata_from_json(body: dict[str, Any]) -> ModelMetadata:
    spec = body.get("model_spec", {})
    sig_json = body.get("metadata", {}).get("signature_def", {})
    sig_map = json_format.ParseDict(
        sig_json, apis_pb2.SignatureDefMap(), ignore_unknown_fields=True
    )
    version = spec.get("version")
    return ModelMetadata(
        model=spec.get("name", ""),
        version=int(version) if version not in (None, "") else None,
        signatures=signatures_from_proto(sig_map),
    )
