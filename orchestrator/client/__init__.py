"""TF Serving clients that import without TensorFlow: gRPC, asyncio gRPC and REST.

    from orchestrator.client import GrpcClient
    with GrpcClient("127.0.0.1:8500") as client:
        client.predict("half_plus_two", {"x": [[1.0], [2.0]]})   # {"y": ndarray}

GrpcClient, AsyncGrpcClient and RestClient share method names and arguments. Errors are
orchestrator.client.errors (all ServingError). Messages are ours, in orchestrator.protos,
with TF Serving's field numbers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from orchestrator.client._common import ModelMetadata, Signature, TensorSpec, VersionStatus
from orchestrator.client._config import RetryPolicy, Tls
from orchestrator.client.errors import (
    Cancelled,
    ClientServingError,
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidInput,
    ModelNotFound,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    ServingUnavailable,
    Unauthenticated,
    Unimplemented,
)
from orchestrator.client.split import LabelSplit
from orchestrator.protocol.tensors import from_tensor_proto, to_tensor_proto

if TYPE_CHECKING:
    from orchestrator.client._aio import AsyncGrpcClient
    from orchestrator.client._grpc import GrpcClient
    from orchestrator.client._rest import RestClient

# The clients load on first use: a REST user never imports grpc, a gRPC user never imports
# requests, and asyncio-only code stays out of blocking programs.
_LAZY = {
    "AsyncGrpcClient": "orchestrator.client._aio",
    "GrpcClient": "orchestrator.client._grpc",
    "RestClient": "orchestrator.client._rest",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AsyncGrpcClient",
    "Cancelled",
    "ClientServingError",
    "Conflict",
    "DeadlineExceeded",
    "FailedPrecondition",
    "GrpcClient",
    "InvalidInput",
    "LabelSplit",
    "ModelMetadata",
    "ModelNotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RestClient",
    "RetryPolicy",
    "ServerError",
    "ServingUnavailable",
    "Signature",
    "TensorSpec",
    "Tls",
    "Unauthenticated",
    "Unimplemented",
    "VersionStatus",
    "from_tensor_proto",
    "to_tensor_proto",
]
