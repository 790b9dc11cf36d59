"""GrpcApi answers Predict with bytes it puts together itself (grpc_service.predict_response):
they must parse to the message TF Serving's API would build, in both output encodings."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.protocol import wire
from orchestrator.protocol.tensors import from_tensor_proto
from orchestrator.protos import apis_pb2
from orchestrator.server.grpc_service import predict_response


@pytest.mark.parametrize("encode", [wire.encode_tensor_fields, wire.encode_tensor])
@pytest.mark.parametrize("version", [0, 1, 7, 2**40])
def test_the_bytes_parse_to_the_same_response(encode, version: int) -> None:
    outputs = {
        "probabilities": np.array([[0.1, 0.2, 0.7]], dtype=np.float32),
        "classes": np.array([2], dtype=np.int64),
        "label_bytes": np.array([b"cat"], dtype=object),
        "ü_long_name_" + "x" * 200: np.zeros((1, 300), dtype=np.float32),  # a length past 127
    }
    got = apis_pb2.PredictResponse.FromString(
        predict_response("m", version, "serving_default", outputs, encode)
    )
    want = apis_pb2.PredictResponse()
    want.model_spec.name = "m"
    want.model_spec.version.value = version
    want.model_spec.signature_name = "serving_default"
    for alias, arr in outputs.items():
        want.outputs[alias].MergeFromString(encode(arr))
    assert got == want
    assert got.model_spec.HasField("version")
    for alias, arr in outputs.items():
        np.testing.assert_array_equal(from_tensor_proto(got.outputs[alias]), arr)
