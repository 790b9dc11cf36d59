"""TF Serving clients that import without TensorFlow (gRPC, asyncio gRPC and REST)."""

from __future__ import annotations

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
from orchestrator.client.tensors import from_tensor_proto, to_tensor_proto

__all__ = [
    "Cancelled",
    "ClientServingError",
    "Conflict",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidInput",
    "ModelNotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ServerError",
    "ServingUnavailable",
    "Unauthenticated",
    "Unimplemented",
    "from_tensor_proto",
    "to_tensor_proto",
]
