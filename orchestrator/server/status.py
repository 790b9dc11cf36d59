"""Errors with TF Serving's status codes, and how each code shows on REST and gRPC."""

from __future__ import annotations

from orchestrator.client.errors import CODE_TO_HTTP

# Canonical codes (google.rpc.Code / grpc.StatusCode), by name and number.
CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
CODE_NAMES = {v: k for k, v in CODES.items()}

# TF Serving's code -> HTTP status table (http_server.cc), kept by the client.
HTTP_STATUS = CODE_TO_HTTP


class ServingStatus(Exception):
    """A request or load failed with a canonical status code and TF Serving's message."""

    def __init__(self, code: str, message: str) -> None:
        assert code in CODES, code
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def invalid(message: str) -> ServingStatus:
    return ServingStatus("INVALID_ARGUMENT", message)


def from_tf_error(e: BaseException) -> ServingStatus:
    """Translate a TensorFlow OpError (or anything else) into a ServingStatus."""
    code = getattr(e, "error_code", None)
    message = getattr(e, "message", None) or str(e)
    if isinstance(code, int) and code in CODE_NAMES and code != 0:
        return ServingStatus(CODE_NAMES[code], message)
    return ServingStatus("INTERNAL", message)
