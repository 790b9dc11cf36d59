"""Hostile gRPC input: the codes TF Serving's C++ server gives, never UNKNOWN, no allocation bombs."""

from __future__ import annotations

import grpc
import pytest
from tensorflow_serving.apis import predict_pb2

from orchestrator.protocol.tensors import from_tensor_proto

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(
        server.grpc_target,
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    )
    yield ch
    ch.close()


def call(channel, method: str, data: bytes, timeout: float = 30) -> grpc.RpcError | bytes:
    fn = channel.unary_unary(
        f"/tensorflow.serving.PredictionService/{method}",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        return fn(data, timeout=timeout)
    except grpc.RpcError as e:
        return e


def predict_request(model: str, **inputs) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    for alias, (dtype, dims) in inputs.items():
        req.inputs[alias].dtype = dtype
        for d in dims:
            req.inputs[alias].tensor_shape.dim.add().size = d
    return req


def test_declared_shape_too_big_is_refused_before_allocating(channel, server):
    log_start = len(server.logs())
    req = predict_request("half_plus_two", x=(1, [2**36]))  # 256 GiB of float, no values
    e = call(channel, "Predict", req.SerializeToString())
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.details() == (
        "Input x: shape [68719476736] of DT_FLOAT declares 274877906944 bytes, above the limit "
        "of 1073741824 bytes (TFS_MAX_TENSOR_BYTES)"
    )
    req.inputs["x"].float_val.append(1.0)  # one value that TF's rule would repeat
    e = call(channel, "Predict", req.SerializeToString())
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "TFS_MAX_TENSOR_BYTES" in e.details()
    assert "Traceback" not in server.logs()[log_start:]


@pytest.mark.parametrize(
    "dims, message",
    [
        ([-3], "Input x: tensor shape [-3] has a negative dimension"),
        ([1] * 65, "Input x: rank 65 is above the limit of 64 (TFS_MAX_TENSOR_RANK)"),
    ],
)
def test_unusable_shapes(channel, dims, message):
    e = call(channel, "Predict", predict_request("half_plus_two", x=(1, dims)).SerializeToString())
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_content_that_does_not_match_the_shape(channel):
    req = predict_request("half_plus_two", x=(1, [2, 1]))
    req.inputs["x"].tensor_content = b"\0" * 12
    e = call(channel, "Predict", req.SerializeToString())
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor_content has 12 bytes" in e.details()


def test_too_many_inputs(channel):
    req = predict_request("mlp", **{f"x{i}": (1, [1]) for i in range(1025)})
    e = call(channel, "Predict", req.SerializeToString())
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.details().startswith("Request names 1025 inputs; at most 1024")


def test_init_op_signature_gives_upstreams_answer(channel):
    # TF Serving runs the init op's NoOp as a fetch and returns the session's own status.
    req = predict_request("mlp")
    req.model_spec.signature_name = "__saved_model_init_op"
    e = call(channel, "Predict", req.SerializeToString())
    assert (e.code(), e.details()) == (
        grpc.StatusCode.OUT_OF_RANGE,
        "Node 'NoOp' (type: 'NoOp', num of outputs: 0) does not have output 0",
    )
    req = predict_request("mlp", features=(1, [1, 4]))
    req.inputs["features"].float_val.extend([1, 2, 3, 4])
    req.model_spec.signature_name = "__saved_model_init_op"
    e = call(channel, "Predict", req.SerializeToString())
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.details().startswith("input size does not match signature: 1!=0")


@pytest.mark.parametrize("method", ["Predict", "Classify", "Regress", "MultiInference"])
def test_unparsable_request_bytes_are_internal_not_unknown(channel, server, method):
    log_start = len(server.logs())
    e = call(channel, method, b"\xff\xff\xff\xff not a protobuf")
    assert e.code() == grpc.StatusCode.INTERNAL
    assert e.details().startswith("Failed to parse the request as a ")
    assert "DecodeError" not in server.logs()[log_start:]


def test_client_gone_mid_upload_leaves_no_traceback(channel, server):
    log_start = len(server.logs())
    req = predict_request("half_plus_two", x=(1, [50_000_000, 1]))
    req.inputs["x"].tensor_content = bytes(200_000_000)
    e = call(channel, "Predict", req.SerializeToString(), timeout=0.05)
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    ok = predict_request("half_plus_two", x=(1, [1, 1]))
    ok.model_spec.version.value = 1
    ok.inputs["x"].float_val.append(1.0)
    resp = predict_pb2.PredictResponse.FromString(call(channel, "Predict", ok.SerializeToString()))
    assert from_tensor_proto(resp.outputs["y"]).tolist() == [[2.5]]
    assert "Traceback" not in server.logs()[log_start:]
