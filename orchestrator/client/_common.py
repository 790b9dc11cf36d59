"""What the gRPC and REST clients share: result types and wire-independent conversions.

The clients differ only at the edge (protobuf vs JSON); both return these types, so code
written against one works against the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.client.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ServingUnavailable,
    error_for_code,
)
from orchestrator.protocol import methods as _methods
from orchestrator.protocol import tensors
from orchestrator.protos import apis_pb2, example_pb2, tensor_pb2

DEFAULT_SIGNATURE = "serving_default"

Inputs = Any  # an array, a list, a scalar, or a Mapping[str, any of those]
Examples = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature. `shape` is None for unknown rank, dims None for any."""

    name: str
    dtype: np.dtype | None
    tf_dtype: str
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class Signature:
    method_name: str
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelMetadata:
    model: str
    version: int | None
    signatures: dict[str, Signature]

    def signature(self, name: str | None = None) -> Signature:
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            known = ", ".join(sorted(self.signatures)) or "none"
            raise InvalidInput(
                f"no signature {key!r}; the model has: {known}", model=self.model
            ) from None


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # UNKNOWN, START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""

    @property
    def is_available(self) -> bool:
        return self.state == "AVAILABLE"


def model_spec(
    model: str,
    version: int | str | None = None,
    label: str | None = None,
    signature: str | None = None,
) -> apis_pb2.ModelSpec:
    if not model:
        raise ValueError("a model name is required")
    if version is not None and label is not None:
        raise ValueError("pass a version or a label, not both")
    spec = apis_pb2.ModelSpec(name=model)
    if version is not None:
        spec.version.value = int(version)
    elif label is not None:
        spec.version_label = label
    if signature:
        spec.signature_name = signature
    return spec


def describe(model: str, version: int | str | None, label: str | None) -> str:
    if version is not None:
        return f"{model} version {version}"
    if label is not None:
        return f"{model} label {label!r}"
    return model


# -- signatures ---------------------------------------------------------------------------


def _tensor_spec(info: Any) -> TensorSpec:
    enum = info.dtype
    try:
        dtype: np.dtype | None = tensors.enum_to_numpy_dtype(enum)
    except TypeError:
        dtype = None
    name = tensor_pb2.DataType.Name(enum) if enum in tensor_pb2.DataType.values() else str(enum)
    shape: tuple[int | None, ...] | None = None
    if info.HasField("tensor_shape") and not info.tensor_shape.unknown_rank:
        shape = tuple(d.size if d.size >= 0 else None for d in info.tensor_shape.dim)
    return TensorSpec(
        name=info.name or info.coo_sparse.values_tensor_name,
        dtype=dtype,
        tf_dtype=name,
        shape=shape,
    )


def signatures_from_proto(sig_map: apis_pb2.SignatureDefMap) -> dict[str, Signature]:
    return {
        key: Signature(
            method_name=sig.method_name,
            inputs={k: _tensor_spec(v) for k, v in sorted(sig.inputs.items())},
            outputs={k: _tensor_spec(v) for k, v in sorted(sig.outputs.items())},
        )
        for key, sig in sorted(sig_map.signature_def.items())
    }


def metadata_from_proto(response: apis_pb2.GetModelMetadataResponse) -> ModelMetadata:
    sig_map = apis_pb2.SignatureDefMap()
    packed = response.metadata.get("signature_def")
    if packed is not None:
        if not packed.type_url.endswith("SignatureDefMap"):
            raise ValueError(f"unexpected metadata type {packed.type_url!r}")
        sig_map.ParseFromString(packed.value)
    spec = response.model_spec
    return ModelMetadata(
        model=spec.name,
        version=spec.version.value if spec.HasField("version") else None,
        signatures=signatures_from_proto(sig_map),
    )


def lone_name(names: Sequence[str], what: str, signature: str | None, model: str) -> str:
    if len(names) != 1:
        raise InvalidInput(
            f"signature {signature or DEFAULT_SIGNATURE!r} has {what} {', '.join(names) or 'none'}: "
            f"pass a dict {{name: value}}",
            model=model,
        )
    return names[0]


# -- status -------------------------------------------------------------------------------


def status_from_proto(response: apis_pb2.GetModelStatusResponse) -> list[VersionStatus]:
    state_name = apis_pb2.ModelVersionStatus.State.Name
    return [
        VersionStatus(
            version=s.version,
            state=state_name(s.state)
            if s.state in apis_pb2.ModelVersionStatus.State.values()
            else "UNKNOWN",
            error_code=error_for_code(s.status.error_code, "").code
            if s.status.error_code
            else "OK",
            error_message=s.status.error_message,
        )
        for s in response.model_version_status
    ]


def failed_load(statuses: Sequence[VersionStatus], model: str, address: str):
    """The error of a version whose load failed (END with an error), if any."""
    for s in statuses:
        if s.state == "END" and s.error_code not in ("OK", ""):
            return error_for_code(
                s.error_code,
                f"version {s.version} failed to load: {s.error_message}",
                model=model,
                address=address,
            )
    return None


# -- examples (classify, regress, multi_inference) ---------------------------------------


def to_feature(value: Any) -> example_pb2.Feature:
    """A tf.train.Feature from a scalar, list or array: floats, ints/bools, or str/bytes."""
    if isinstance(value, example_pb2.Feature):
        return value
    if isinstance(value, (str, bytes)):
        return example_pb2.Feature(
            bytes_list=example_pb2.BytesList(
                value=[tensors.string_values(np.array(value, dtype=object))[0]]
            )
        )
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        return example_pb2.Feature(
            bytes_list=example_pb2.BytesList(
                value=tensors.string_values(np.asarray(value, dtype=object))
            )
        )
    if arr.dtype.kind in "iub":
        return example_pb2.Feature(
            int64_list=example_pb2.Int64List(value=arr.astype(np.int64).ravel().tolist())
        )
    if arr.dtype.kind == "f" or arr.size == 0:
        return example_pb2.Feature(
            float_list=example_pb2.FloatList(value=arr.astype(np.float32).ravel().tolist())
        )
    raise TypeError(f"a feature holds floats, ints or strings, not {arr.dtype}")


def to_example(features: Mapping[str, Any] | example_pb2.Example) -> example_pb2.Example:
    if isinstance(features, example_pb2.Example):
        return features
    example = example_pb2.Example()
    fmap = example.features.feature
    for name, value in features.items():
        fmap[name].CopyFrom(to_feature(value))
    return example


def to_input(examples: Examples, context: Mapping[str, Any] | None) -> apis_pb2.Input:
    converted = [to_example(e) for e in examples]
    if context is None:
        return apis_pb2.Input(example_list=apis_pb2.ExampleList(examples=converted))
    return apis_pb2.Input(
        example_list_with_context=apis_pb2.ExampleListWithContext(
            examples=converted, context=to_example(context)
        )
    )


def classification_arrays(pairs: Sequence[Sequence[tuple[str, float]]]) -> dict[str, np.ndarray]:
    """{"classes": str [n, k], "scores": float32 [n, k]}; ragged rows pad with "" and NaN."""
    k = max((len(p) for p in pairs), default=0)
    classes = np.full((len(pairs), k), "", dtype=object)
    scores = np.full((len(pairs), k), np.nan, dtype=np.float32)
    for i, row in enumerate(pairs):
        for j, (label, score) in enumerate(row):
            classes[i, j] = label
            scores[i, j] = score
    return {"classes": classes.astype(str), "scores": scores}


def classification_from_proto(result: apis_pb2.ClassificationResult) -> dict[str, np.ndarray]:
    return classification_arrays(
        [[(c.label, c.score) for c in cls.classes] for cls in result.classifications]
    )


def regression_from_proto(result: apis_pb2.RegressionResult) -> dict[str, np.ndarray]:
    return {"outputs": np.array([r.value for r in result.regressions], dtype=np.float32)}


def method_name(method: str) -> str:
    """ "classify" / "regress" (or the full TF Serving name) -> the full name."""
    short = {"classify": _methods.CLASSIFY_METHOD_NAME, "regress": _methods.REGRESS_METHOD_NAME}
    if method in short:
        return short[method]
    if method in short.values():
        return method
    raise ValueError(f"multi_inference tasks are 'classify' or 'regress', not {method!r}")


def inference_result(result: apis_pb2.InferenceResult) -> dict[str, np.ndarray]:
    if result.HasField("classification_result"):
        return classification_from_proto(result.classification_result)
    return regression_from_proto(result.regression_result)


NOT_READY = (ModelNotFound, ServingUnavailable, DeadlineExceeded)
"""Answers that mean "not yet" while waiting for a model: keep polling."""


def poll_until_available(
    fetch: Callable[[float], list[VersionStatus]],
    *,
    model: str,
    version: int | str | None,
    label: str | None,
    address: str,
    timeout_s: float,
    poll_interval_s: float,
    call_timeout_s: float,
) -> list[VersionStatus]:
    """The blocking clients' wait: poll status until a wanted version is AVAILABLE.

    Raises DeadlineExceeded naming the last state seen, or the load error of a version that
    ended with one.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        remaining = max(deadline - time.monotonic(), 0.001)
        try:
            statuses = fetch(min(remaining, call_timeout_s))
        except NOT_READY as e:
            last = str(e)
        else:
            ready = [s for s in statuses if s.is_available]
            if ready:
                return ready
            failed = failed_load(statuses, model, address)
            if failed is not None:
                raise failed
            last = ", ".join(f"version {s.version} {s.state}" for s in statuses) or "none"
        if time.monotonic() + poll_interval_s >= deadline:
            raise DeadlineExceeded(
                f"waited {timeout_s:g}s for {describe(model, version, label)} to be "
                f"AVAILABLE; last seen: {last}",
                address=address,
            )
        time.sleep(poll_interval_s)


class BlockingReadiness:
    """`is_model_ready` and `wait_until_available` for the blocking clients (gRPC and REST).

    A client brings `_status(model, version, label, timeout_s, retry)`, `timeout_s` and
    `_endpoint` (its address or URL, named in errors).
    """

    timeout_s: float

    @property
    def _endpoint(self) -> str:
        raise NotImplementedError

    def _status(self, model: str, version: int | str | None, label: str | None,
                timeout_s: float | None, retry: Any) -> list[VersionStatus]:
        raise NotImplementedError

    def is_model_ready(
        self,
        model: str,
        *,
        version: int | str | None = None,
        label: str | None = None,
        timeout_s: float | None = None,
    ) -> bool:
        """True when the version (any version if none given) is AVAILABLE. One try, no retry."""
        from orchestrator.client._config import NO_RETRY

        try:
            statuses = self._status(model, version, label, timeout_s, NO_RETRY)
        except NOT_READY:
            return False
        return any(s.is_available for s in statuses)

    def wait_until_available(
        self,
        model: str,
        *,
        version: int | str | None = None,
        label: str | None = None,
        timeout_s: float = 60.0,
        poll_interval_s: float = 0.25,
    ) -> list[VersionStatus]:
        """Block until the version (any version if none given) is AVAILABLE; return those.

        Raises DeadlineExceeded naming the last state seen, or the load error of a version
        that ended with one.
        """
        from orchestrator.client._config import NO_RETRY

        return poll_until_available(
            lambda call_timeout_s: self._status(model, version, label, call_timeout_s, NO_RETRY),
            model=model, version=version, label=label, address=self._endpoint,
            timeout_s=timeout_s, poll_interval_s=poll_interval_s, call_timeout_s=self.timeout_s,
        )
