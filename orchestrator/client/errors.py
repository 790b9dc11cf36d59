"""Errors a TF Serving endpoint answers with, one class per thing a caller reacts to.

    ServingError                (orchestrator.errors)
     ├── ModelNotFound          NOT_FOUND / 404: no such model, version or label loaded
     ├── InvalidInput           INVALID_ARGUMENT, OUT_OF_RANGE / 400: fix the request
     ├── FailedPrecondition     FAILED_PRECONDITION: e.g. a label on an unavailable version
     ├── ServingUnavailable     UNAVAILABLE / 503, connection refused: retried, then raised
     ├── DeadlineExceeded       DEADLINE_EXCEEDED / 504, or our own deadline passed
     ├── ResourceExhausted      RESOURCE_EXHAUSTED / 429: message too large, overloaded
     ├── Unimplemented          UNIMPLEMENTED / 501: wrong method for the signature
     ├── Unauthenticated        UNAUTHENTICATED / 401, TLS handshake refused
     ├── PermissionDenied       PERMISSION_DENIED / 403
     ├── Conflict               ALREADY_EXISTS, ABORTED / 409
     ├── Cancelled              CANCELLED / 499
     └── ServerError            anything else (INTERNAL, UNKNOWN, DATA_LOSS / 500)

Each carries the server's message, the model and the address it talked to, the canonical
code name and the HTTP status. The code <-> HTTP table is TF Serving's (http_server.cc), kept in
orchestrator.protocol.status, which our server shares.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import ServingError
from orchestrator.protocol.status import (  # noqa: F401  (re-exported: part of this module's API)
    CODE_NAMES,
    CODE_TO_HTTP,
    code_name,
    code_number,
    http_status_for_code,
)


class ClientServingError(ServingError):
    """Base of the client's errors; never raised itself (see the tree above)."""

    code = "UNKNOWN"
    http_status = 500

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        address: str | None = None,
        code: str | None = None,
        http_status: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.server_message = message
        self.model = model
        self.address = address
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        where = []
        if model:
            where.append(f"model {model!r}")
        if address:
            where.append(f"at {address}")
        prefix = f"{' '.join(where)}: " if where else ""
        super().__init__(f"{prefix}{self.code}: {message}", fix=fix)


class ModelNotFound(ClientServingError):
    """The model, version or label is not loaded (or does not exist)."""

    code, http_status = "NOT_FOUND", 404


class InvalidInput(ClientServingError):
    """The request does not fit the model: names, dtypes, shapes, unknown label."""

    code, http_status = "INVALID_ARGUMENT", 400


class FailedPrecondition(ClientServingError):
    code, http_status = "FAILED_PRECONDITION", 400


class ServingUnavailable(ClientServingError):
    """Nobody answered, or the server said it cannot serve now. Retried before raised."""

    code, http_status = "UNAVAILABLE", 503


class DeadlineExceeded(ClientServingError):
    code, http_status = "DEADLINE_EXCEEDED", 504


class ResourceExhausted(ClientServingError):
    code, http_status = "RESOURCE_EXHAUSTED", 429


class Unimplemented(ClientServingError):
    code, http_status = "UNIMPLEMENTED", 501


class Unauthenticated(ClientServingError):
    code, http_status = "UNAUTHENTICATED", 401


class PermissionDenied(ClientServingError):
    code, http_status = "PERMISSION_DENIED", 403


class Conflict(ClientServingError):
    code, http_status = "ALREADY_EXISTS", 409


class Cancelled(ClientServingError):
    code, http_status = "CANCELLED", 499


class ServerError(ClientServingError):
    code, http_status = "INTERNAL", 500


_BY_CODE: dict[str, type[ClientServingError]] = {
    "NOT_FOUND": ModelNotFound,
    "INVALID_ARGUMENT": InvalidInput,
    "OUT_OF_RANGE": InvalidInput,
    "FAILED_PRECONDITION": FailedPrecondition,
    "UNAVAILABLE": ServingUnavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
    "UNIMPLEMENTED": Unimplemented,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "ALREADY_EXISTS": Conflict,
    "ABORTED": Conflict,
    "CANCELLED": Cancelled,
}

# REST only has the status: 400 covers three codes, and INVALID_ARGUMENT is the common one.
_BY_HTTP: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_for_code(
    code: Any, message: str, *, model: str | None = None, address: str | None = None
) -> ClientServingError:
    """The error for a canonical code (name, number or grpc.StatusCode)."""
    name = code_name(code)
    cls = _BY_CODE.get(name, ServerError)
    return cls(
        message, model=model, address=address, code=name, http_status=http_status_for_code(name)
    )


def error_for_http(
    status: int, message: str, *, model: str | None = None, address: str | None = None
) -> ClientServingError:
    """The error for an HTTP status from a REST endpoint."""
    name = _BY_HTTP.get(status, "INTERNAL" if status >= 500 else "UNKNOWN")
    cls = _BY_CODE.get(name, ServerError)
    return cls(message, model=model, address=address, code=name, http_status=status)


__all__ = [
    "CODE_TO_HTTP",
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
    "code_name",
    "code_number",
    "error_for_code",
    "error_for_http",
    "http_status_for_code",
]
