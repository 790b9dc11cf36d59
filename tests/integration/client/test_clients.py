"""Every method of GrpcClient, RestClient and AsyncGrpcClient against a real server.

The blocking clients run the same tests through one parametrised fixture: same calls, same
answers. The asyncio client runs the same scenarios through a small sync adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from orchestrator.client import (
    AsyncGrpcClient,
    GrpcClient,
    InvalidInput,
    ModelMetadata,
    ModelNotFound,
    RestClient,
)
from orchestrator.protos import apis_pb2
from tests.helpers.requires import require_module

pytestmark = pytest.mark.integration

X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
EXAMPLES = [{"x": 1.0}, {"x": 3.0}]


class SyncAio:
    """AsyncGrpcClient's coroutines run to completion, one event loop per client."""

    def __init__(self, address: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = AsyncGrpcClient(address)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def run(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(method(*args, **kwargs))

        return run

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()


@pytest.fixture(params=["grpc", "rest", "aio"])
def client(request, server) -> Iterator[Any]:
    if request.param == "grpc":
        c: Any = GrpcClient(server.grpc_address)
    elif request.param == "rest":
        c = RestClient(server.rest_url)
    else:
        c = SyncAio(server.grpc_address)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(params=["grpc", "aio"])
def grpc_client(request, server) -> Iterator[Any]:
    c: Any = (
        GrpcClient(server.grpc_address) if request.param == "grpc" else SyncAio(server.grpc_address)
    )
    try:
        yield c
    finally:
        c.close()


def test_predict_named_inputs_default_version_is_latest(client) -> None:
    out = client.predict("scale", {"x": X})
    assert set(out) == {"y"}
    assert out["y"].dtype == np.float32
    np.testing.assert_allclose(out["y"], 3 * X)


def test_predict_lone_value_and_python_lists(client) -> None:
    np.testing.assert_allclose(client.predict("scale", X.tolist())["y"], 3 * X)
    np.testing.assert_allclose(client.predict("scale", [[1, 2, 3]])["y"], [[3, 6, 9]])


@pytest.mark.parametrize(("selector", "k"), [({"version": 1}, 2), ({"version": "2"}, 3),
                                             ({"label": "stable"}, 2), ({"label": "canary"}, 3)])  # fmt: skip
def test_version_and_label_selection(client, selector, k) -> None:
    np.testing.assert_allclose(client.predict("scale", {"x": X}, **selector)["y"], k * X)
    statuses = client.status("scale", **selector)
    assert [(s.version, s.state) for s in statuses] == [(k - 1, "AVAILABLE")]


def test_signature_selection_and_output_filter(client) -> None:
    out = client.predict("scale", {"a": [1.0, 2.0], "b": [0.5, 0.5]}, signature="two")
    np.testing.assert_allclose(out["sum"], [1.5, 2.5])
    np.testing.assert_allclose(out["diff"], [0.5, 1.5])
    only = client.predict("scale", {"a": [1.0], "b": [1.0]}, signature="two", output_filter=["sum"])
    assert set(only) == {"sum"}


def test_lone_value_into_two_inputs_says_pass_a_dict(client) -> None:
    with pytest.raises(InvalidInput, match="pass a dict"):
        client.predict("scale", [1.0], signature="two")


def test_classify_regress(client) -> None:
    result = client.classify("half_plus_two", EXAMPLES, signature="classify_x_to_y")
    np.testing.assert_allclose(result["scores"], [[2.5], [3.5]])
    assert result["classes"].shape == (2, 1)
    result = client.regress("half_plus_two", EXAMPLES, signature="regress_x_to_y")
    assert result["outputs"].dtype == np.float32
    np.testing.assert_allclose(result["outputs"], [2.5, 3.5])


def test_classify_with_context(client) -> None:
    result = client.regress(
        "half_plus_two", [{"y": 1.0}], context={"x": 5.0}, signature="regress_x_to_y"
    )
    np.testing.assert_allclose(result["outputs"], [4.5])


def test_metadata(client) -> None:
    meta = client.metadata("scale", version=1)
    assert isinstance(meta, ModelMetadata)
    assert meta.model == "scale" and meta.version == 1
    assert set(meta.signatures) >= {"serving_default", "two"}
    x = meta.signature().inputs["x"]
    assert x.dtype == np.float32 and x.tf_dtype == "DT_FLOAT" and x.shape == (None, 3)
    assert meta.signature().method_name == "tensorflow/serving/predict"


def test_status_and_readiness(client) -> None:
    statuses = client.status("scale")
    assert sorted((s.version, s.state, s.error_code) for s in statuses) == [
        (1, "AVAILABLE", "OK"),
        (2, "AVAILABLE", "OK"),
    ]
    assert client.is_model_ready("scale")
    assert client.is_model_ready("scale", version=1)
    assert not client.is_model_ready("scale", version=7)
    assert not client.is_model_ready("no_such_model")
    ready = client.wait_until_available("scale", label="stable", timeout_s=10)
    assert [s.version for s in ready] == [1]


def test_errors_carry_message_model_and_address(client, server) -> None:
    with pytest.raises(ModelNotFound) as info:
        client.predict("no_such_model", {"x": X})
    err = info.value
    assert err.model == "no_such_model"
    assert err.address in (server.grpc_address, server.rest_url)
    assert "no_such_model" in err.server_message
    with pytest.raises(InvalidInput, match="Unrecognized servable version label: nope"):
        client.predict("scale", {"x": X}, label="nope")
    with pytest.raises(ValueError, match="not both"):
        client.predict("scale", {"x": X}, version=1, label="stable")


def test_wrong_input_name_is_invalid_input(client) -> None:
    with pytest.raises(InvalidInput):
        client.predict("scale", {"nope": X})


def test_multi_inference(grpc_client) -> None:
    results = grpc_client.multi_inference(
        "half_plus_two",
        EXAMPLES,
        [("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")],
    )
    np.testing.assert_allclose(results[0]["outputs"], [2.5, 3.5])
    np.testing.assert_allclose(results[1]["scores"], [[2.5], [3.5]])


def test_reload_config_moves_a_label_and_back(grpc_client, model_root) -> None:
    original = (model_root / "models.config").read_text()
    moved = original.replace('key: "stable" value: 1', 'key: "stable" value: 2')
    assert moved != original
    try:
        grpc_client.reload_config(moved)
        np.testing.assert_allclose(
            grpc_client.predict("scale", {"x": X}, label="stable")["y"], 3 * X
        )
    finally:
        config = apis_pb2.ModelServerConfig()
        from google.protobuf import text_format

        text_format.Parse(original, config)
        grpc_client.reload_config(config)
    np.testing.assert_allclose(grpc_client.predict("scale", {"x": X}, label="stable")["y"], 2 * X)


def test_reload_config_accepts_upstream_message(grpc_client, model_root) -> None:
    """TF Serving's own ModelServerConfig message (tensorflow-serving-api), changed through its
    own API, is sent and applied: the label moves, then moves back with the original message."""
    require_module("tensorflow_serving")
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    original = text_format.Parse(
        (model_root / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    moved = model_server_config_pb2.ModelServerConfig()
    moved.CopyFrom(original)
    (scale,) = [c for c in moved.model_config_list.config if c.name == "scale"]
    assert scale.version_labels["stable"] == 1
    scale.version_labels["stable"] = 2
    try:
        grpc_client.reload_config(moved)
        np.testing.assert_allclose(
            grpc_client.predict("scale", {"x": X}, label="stable")["y"], 3 * X
        )
    finally:
        grpc_client.reload_config(original)
    np.testing.assert_allclose(grpc_client.predict("scale", {"x": X}, label="stable")["y"], 2 * X)


def test_rest_row_format(server) -> None:
    with RestClient(server.rest_url, predict_format="row") as c:
        np.testing.assert_allclose(c.predict("scale", {"x": X})["y"], 3 * X)
        out = c.predict("scale", {"a": [1.0, 2.0], "b": [1.0, 1.0]}, signature="two")
        np.testing.assert_allclose(out["sum"], [2.0, 3.0])


def test_large_tensor_over_the_4mib_default(grpc_client) -> None:
    big = np.random.default_rng(0).random((200_000, 3), dtype=np.float32)  # 2.4 MB in, out
    big = np.concatenate([big, big])  # 4.8 MB each way: over gRPC's 4 MiB default
    np.testing.assert_allclose(grpc_client.predict("scale", {"x": big}, version=1)["y"], 2 * big)
