"""What GrpcClient keeps between Predict calls: the model_spec field, built once per selection.

No server is needed: a gRPC channel connects on its first call, and none is made here.
"""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.client import AsyncGrpcClient, GrpcClient
from orchestrator.client._common import model_spec
from orchestrator.protocol import wire as _wire
from orchestrator.protocol.tensors import to_tensor_proto
from orchestrator.protos import apis_pb2

SELECTIONS = [
    ("m", None, None, None),
    ("m2", None, None, None),
    ("m", 7, None, None),
    ("m", "8", None, None),
    ("m", None, "canary", None),
    ("m", None, None, "sig"),
    ("m", 7, None, "sig"),
]


@pytest.fixture
def client():
    with GrpcClient("127.0.0.1:1") as c:
        yield c


def test_spec_field_follows_model_version_label_and_signature(client) -> None:
    seen = set()
    for key in SELECTIONS:
        spec_field, _ = client._predict_head(key)
        spec = model_spec(*key).SerializeToString()
        assert spec_field == _wire.len_field(1, len(spec)) + spec
        request = apis_pb2.PredictRequest.FromString(spec_field)
        assert request.model_spec == model_spec(*key)
        seen.add(spec_field)
        assert client._predict_head(key) is client._predict_heads[key]  # cached
    assert len(seen) == len(SELECTIONS)  # every selection its own field
    assert client._predict_head(("m", 7, None, None))[1] == "m version 7"
    assert client._predict_head(("m", None, "canary", None))[1] == "m label 'canary'"


def test_request_bytes_equal_protobuf_for_each_selection(client) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for key in SELECTIONS:
        spec_field, who = client._predict_head(key)
        raw = client._predict_request(spec_field, {"x": x}, ["y"], who)
        expected = apis_pb2.PredictRequest(model_spec=model_spec(*key), output_filter=["y"])
        expected.inputs["x"].CopyFrom(to_tensor_proto(x))
        assert raw == expected.SerializeToString()


def test_bad_selections_are_not_cached(client) -> None:
    with pytest.raises(ValueError, match="not both"):
        client._predict_head(("m", 1, "stable", None))
    with pytest.raises(ValueError, match="model name"):
        client._predict_head(("", None, None, None))
    assert client._predict_heads == {}


def test_the_cache_is_bounded(client) -> None:
    for i in range(1000):
        client._predict_head((f"m{i}", None, None, None))
    assert 0 < len(client._predict_heads) <= 256
    spec = model_spec("m999").SerializeToString()
    assert client._predict_head(("m999", None, None, None))[0].endswith(spec)


def test_async_client_shares_the_request_building() -> None:
    client = AsyncGrpcClient("127.0.0.1:1")
    assert client._predict_head(("m", 3, None, None)) == GrpcClient._predict_head(
        client, ("m", 3, None, None)
    )


@pytest.mark.parametrize(
    ("inputs", "needs"),
    [
        ({"x": np.zeros(3, np.float32)}, False),
        ({"x": to_tensor_proto(np.zeros(3))}, False),
        ({"x": np.zeros(3).view(np.matrix)}, False),  # an ndarray subclass is an array
        ({"x": [1.0, 2.0]}, True),
        ({"x": np.zeros(3), "y": 1.0}, True),
        (np.zeros(3, np.float32), True),  # a lone array needs the input's name
        ([1.0], True),
    ],
)
def test_which_inputs_need_the_signature(inputs, needs) -> None:
    from types import MappingProxyType

    assert GrpcClient._needs_signature(inputs) is needs
    if isinstance(inputs, dict):
        assert GrpcClient._needs_signature(MappingProxyType(inputs)) is needs
