"""Every dtype through a real server and back, on gRPC and REST (identity signatures)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from orchestrator.client import ClientServingError, GrpcClient, RestClient
from tests.helpers.requires import require_module

from ._models import DTYPE_NAMES

pytestmark = pytest.mark.integration
# TF Serving's JSON has no conversion to these (json_tensor.cc AddValueToTensor); JSON has no
# complex numbers at all (the client refuses before sending).
REST_UNSUPPORTED = {"uint16", "complex64", "complex128"}
require_module("ml_dtypes")
import ml_dtypes  # noqa: E402


def sample(name: str, *, rest: bool = False) -> np.ndarray:
    if name == "string":
        # REST sends binary only for outputs named *_bytes ({"b64": ...}); "y" is text there.
        binary = b"bin" if rest else b"\x00\xffbin"
        return np.array([[b"a", binary], [b"", "é".encode()]], dtype=object)
    if name == "bool":
        return np.array([[True, False], [False, True]])
    dtype = np.dtype(ml_dtypes.bfloat16 if name == "bfloat16" else name)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        top = 2**63 - 1 if rest and name == "uint64" else info.max  # see test_rest_uint64_max
        return np.array([[info.min, top], [0, 1]], dtype=dtype)
    if dtype.kind == "c":
        return np.array([[1 + 2j, -3.5j], [0, 1e30]], dtype=dtype)
    if name == "bfloat16" and rest:  # see test_rest_bfloat16_infinity
        return np.array([[0.5, -2.0], [1e3, 7.0]], dtype=dtype)
    return np.array([[0.5, -2.0], [1e3, np.inf]], dtype=dtype)


@pytest.fixture(scope="module", params=["grpc", "rest"])
def client(request, server) -> Iterator[Any]:
    c: Any = (
        GrpcClient(server.grpc_address) if request.param == "grpc" else RestClient(server.rest_url)
    )
    with c:
        yield c


@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_round_trip(client, name: str) -> None:
    rest = isinstance(client, RestClient)
    value = sample(name, rest=rest)
    if rest and name in REST_UNSUPPORTED:
        with pytest.raises((ClientServingError, TypeError)):
            client.predict("dtypes", {"x": value}, signature=f"id_{name}")
        return
    out = client.predict("dtypes", {"x": value}, signature=f"id_{name}")["y"]
    assert out.dtype == value.dtype, name
    assert out.shape == value.shape
    np.testing.assert_array_equal(out, value)


def test_scalar_and_empty(client) -> None:
    out = client.predict("dtypes", {"x": np.float32(1.5)}, signature="id_float32")["y"]
    assert out.shape == () and out == 1.5
    if isinstance(client, GrpcClient):  # JSON has no shape for an empty list
        out = client.predict("dtypes", {"x": np.zeros((0, 4), np.int64)}, signature="id_int64")["y"]
        assert out.shape == (0, 4) and out.dtype == np.int64


def test_rest_bfloat16_infinity(server) -> None:
    """TF Serving writes non-finite floats as Infinity/NaN tokens, bfloat16 included."""
    with RestClient(server.rest_url) as client:
        value = np.array([np.inf, -np.inf, 1.0], dtype=ml_dtypes.bfloat16)
        out = client.predict("dtypes", {"x": value}, signature="id_bfloat16")["y"]
        np.testing.assert_array_equal(out, value)


def test_rest_uint64_max(server) -> None:
    """JSON integers up to 2**64-1 are uint64 values upstream (rapidjson IsUint64)."""
    with RestClient(server.rest_url) as client:
        value = np.array([0, 2**64 - 1, 2**63], dtype=np.uint64)
        out = client.predict("dtypes", {"x": value}, signature="id_uint64")["y"]
        np.testing.assert_array_equal(out, value)
        assert out.dtype == np.uint64
