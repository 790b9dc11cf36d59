"""Errors with TF Serving's status codes, and how each code shows on REST and gRPC."""

from __future__ import annotations

from orchestrator.protocol import status as _shared

# Canonical codes (google.rpc.Code / grpc.StatusCode), by name and number: one table, shared.
CODES = {name: number for number, name in enumerate(_shared.CODE_NAMES)}
CODE_NAMES = dict(enumerate(_shared.CODE_NAMES))

# TF Serving's code -> HTTP status table (http_server.cc).
HTTP_STATUS = _shared.CODE_TO_HTTP


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
