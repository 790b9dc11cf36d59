"""Property-based: any gRPC request bytes or TensorProto give a value or our error, in bounds.

The server's path is: parse the request (bad bytes -> INTERNAL), check each input's declared
shape (guard), then decode it (ValueError/TypeError become INVALID_ARGUMENT).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.protocol.tensors import from_tensor_proto
from orchestrator.protos import apis_pb2, tensor_pb2
from orchestrator.server import guard
from orchestrator.server.config import ConfigError, parse_model_server_config
from orchestrator.server.guard import check_input_count, check_tensor_proto
from orchestrator.server.status import ServingStatus
from tests.helpers.bounded import bounded

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DECODE_ERRORS = (ServingStatus, ValueError, TypeError)


@pytest.fixture(scope="module", autouse=True)
def small_tensor_budget():
    """A 16 MiB budget, so a tensor the guard lets through fits the test's memory bound."""
    saved = guard.LIMITS
    guard.LIMITS = dataclasses.replace(saved, max_tensor_bytes=16 * 2**20)
    # ml_dtypes (bfloat16, float8) loads on first use: load it here, outside the bounds
    t = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_BFLOAT16)
    from_tensor_proto(t)
    yield
    guard.LIMITS = saved


dims = st.lists(
    st.one_of(st.integers(0, 8), st.integers(-5, 2**40), st.sampled_from([2**31, 2**36, 2**62])),
    max_size=6,
)


@st.composite
def tensor_protos(draw: st.DrawFn) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto()
    t.dtype = draw(
        st.one_of(
            st.sampled_from([1, 2, 3, 4, 5, 6, 7, 9, 10, 14, 17, 19, 22, 23]), st.integers(0, 40)
        )
    )
    for d in draw(dims):
        t.tensor_shape.dim.add().size = d
    t.tensor_shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
    kind = draw(
        st.sampled_from(["content", "float", "int", "int64", "string", "bool", "half", "none"])
    )
    if kind == "content":
        t.tensor_content = draw(st.binary(max_size=64))
    elif kind == "float":
        t.float_val.extend(draw(st.lists(st.floats(width=32), max_size=8)))
    elif kind == "int":
        t.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8)))
    elif kind == "int64":
        t.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8)))
    elif kind == "string":
        t.string_val.extend(draw(st.lists(st.binary(max_size=8), max_size=8)))
    elif kind == "bool":
        t.bool_val.extend(draw(st.lists(st.booleans(), max_size=8)))
    elif kind == "half":
        t.half_val.extend(draw(st.lists(st.integers(0, 2**16 - 1), max_size=8)))
    return t


def server_decode(proto: tensor_pb2.TensorProto) -> np.ndarray:
    check_tensor_proto("x", proto)
    return from_tensor_proto(proto)


@SETTINGS
@given(proto=tensor_protos())
def test_tensor_proto_decoder(proto):
    result = bounded(lambda: server_decode(proto), allowed=DECODE_ERRORS)
    if isinstance(result, np.ndarray):
        assert list(result.shape) == [d.size for d in proto.tensor_shape.dim]


@SETTINGS
@given(
    data=st.one_of(st.binary(max_size=300), tensor_protos().map(lambda t: t.SerializeToString()))
)
def test_request_bytes(data):
    def run() -> object:
        try:
            req = apis_pb2.PredictRequest.FromString(data)
        except DecodeError:
            return None  # the server answers INTERNAL
        check_input_count(len(req.inputs))
        return {alias: server_decode(p) for alias, p in req.inputs.items()}

    bounded(run, allowed=DECODE_ERRORS)


# -- models.config -------------------------------------------------------------------------------
names = st.text(st.characters(codec="utf-8", exclude_characters='"\\\n'), max_size=300)


@st.composite
def model_configs(draw: st.DrawFn) -> str:
    entries = []
    for _ in range(draw(st.integers(0, 3))):
        parts = [f'name: "{draw(names)}"', f'base_path: "{draw(names)}"']
        if draw(st.booleans()):
            parts.append(f'model_platform: "{draw(st.sampled_from(["tensorflow", "tflite", ""]))}"')
        policy = draw(
            st.sampled_from(
                ["", "all {}", "latest { num_versions: 2 }", "specific { versions: 3 }"]
            )
        )
        if policy:
            parts.append(f"model_version_policy {{ {policy} }}")
        for label, version in draw(
            st.dictionaries(names, st.integers(-3, 2**40), max_size=2)
        ).items():
            parts.append(f'version_labels {{ key: "{label}" value: {version} }}')
        entries.append("config { " + " ".join(parts) + " }")
    return "model_config_list { " + " ".join(entries) + " }"


@SETTINGS
@given(text=st.one_of(model_configs(), st.text(max_size=200)))
def test_models_config_parser(text):
    bounded(lambda: parse_model_server_config(text), allowed=(ConfigError,))
