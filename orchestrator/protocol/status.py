"""Canonical status codes and TF Serving's code -> HTTP table, shared by client and server."""

from __future__ import annotations

from typing import Any

# Canonical codes (gRPC and tensorflow.error.Code share the numbers).
CODE_NAMES: tuple[str, ...] = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)

# TF Serving's REST mapping of canonical codes; anything not listed is 500.
CODE_TO_HTTP: dict[str, int] = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "DEADLINE_EXCEEDED": 504,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "UNIMPLEMENTED": 501,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "CANCELLED": 499,
}


def code_name(code: Any) -> str:
    """Canonical name of a code given as a name, a number or a grpc.StatusCode."""
    if isinstance(code, str):
        name = code.upper()
        return name if name in CODE_NAMES else "UNKNOWN"
    if isinstance(code, int):
        return CODE_NAMES[code] if 0 <= code < len(CODE_NAMES) else "UNKNOWN"
    attr = getattr(code, "name", None)  # grpc.StatusCode, without importing grpc here
    return attr if isinstance(attr, str) and attr in CODE_NAMES else "UNKNOWN"


def code_number(code: Any) -> int:
    return CODE_NAMES.index(code_name(code))


def http_status_for_code(code: Any) -> int:
    return CODE_TO_HTTP.get(code_name(code), 500)
