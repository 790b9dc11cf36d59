"""gRPC codes and HTTP statuses map to one error tree, with TF Serving's HTTP table."""

from __future__ import annotations

import grpc
import pytest

from orchestrator.client import errors
from orchestrator.errors import OrchestratorError, ServingError


@pytest.mark.parametrize(
    ("code", "cls", "http"),
    [
        (grpc.StatusCode.NOT_FOUND, errors.ModelNotFound, 404),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidInput, 400),
        (grpc.StatusCode.OUT_OF_RANGE, errors.InvalidInput, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition, 400),
        (grpc.StatusCode.UNAVAILABLE, errors.ServingUnavailable, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded, 504),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted, 429),
        (grpc.StatusCode.UNIMPLEMENTED, errors.Unimplemented, 501),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated, 401),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied, 403),
        (grpc.StatusCode.ALREADY_EXISTS, errors.Conflict, 409),
        (grpc.StatusCode.ABORTED, errors.Conflict, 409),
        (grpc.StatusCode.CANCELLED, errors.Cancelled, 499),
        (grpc.StatusCode.INTERNAL, errors.ServerError, 500),
        (grpc.StatusCode.UNKNOWN, errors.ServerError, 500),
        (grpc.StatusCode.DATA_LOSS, errors.ServerError, 500),
    ],
)
def test_grpc_code_maps_to_class_and_http(code, cls, http) -> None:
    err = errors.error_for_code(code, "boom", model="m", address="127.0.0.1:1")
    assert type(err) is cls
    assert isinstance(err, ServingError) and isinstance(err, OrchestratorError)
    assert err.code == code.name and err.http_status == http
    assert errors.http_status_for_code(code) == http
    assert errors.http_status_for_code(code.value[0]) == http  # number, as StatusProto has it
    assert errors.code_number(code.name) == code.value[0]
    assert err.server_message == "boom" and err.model == "m" and err.address == "127.0.0.1:1"
    assert str(err) == f"model 'm' at 127.0.0.1:1: {code.name}: boom"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.InvalidInput),
        (404, errors.ModelNotFound),
        (429, errors.ResourceExhausted),
        (501, errors.Unimplemented),
        (503, errors.ServingUnavailable),
        (504, errors.DeadlineExceeded),
        (500, errors.ServerError),
        (502, errors.ServingUnavailable),
        (418, errors.ServerError),
    ],
)
def test_http_status_maps_to_class(status, cls) -> None:
    err = errors.error_for_http(status, "nope", model="m")
    assert type(err) is cls and err.http_status == status


def test_names_and_numbers_are_accepted() -> None:
    assert errors.code_name(5) == "NOT_FOUND"
    assert errors.code_name("not_found") == "NOT_FOUND"
    assert errors.code_name(99) == "UNKNOWN"
    assert errors.http_status_for_code("OK") == 200
    assert errors.http_status_for_code("SOMETHING") == 500


def test_every_error_has_the_serving_exit_code() -> None:
    assert errors.ModelNotFound("x").exit_code == ServingError.exit_code
    assert str(errors.ModelNotFound("x")) == "NOT_FOUND: x"
