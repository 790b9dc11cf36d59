"""The hand-written Predict codec writes protobuf's bytes and reads them back."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.protocol import wire as _wire
from orchestrator.protocol.tensors import TensorProto, from_tensor_proto, to_tensor_proto
from orchestrator.protos import apis_pb2

from .test_tensors import NUMERIC, sample

VALUES = [
    *(sample(dtype) for dtype, _ in NUMERIC),
    np.float32(3.0),
    np.zeros((0, 4), np.int8),
    np.zeros((3, 0), np.float64),
    ["a", "bé"],
    [b"\x00\x01"],
    np.arange(2**20, dtype=np.float32).reshape(1024, 1024),
    np.arange(20, dtype=np.float32)[::2],
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: str(np.asarray(v).dtype))
def test_encode_tensor_equals_protobuf(value) -> None:
    data = _wire.encode_tensor(value)
    assert data == to_tensor_proto(value).SerializeToString()
    expected = from_tensor_proto(TensorProto.FromString(data))
    got = _wire.decode_tensor(data)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert got.flags.writeable


def _spec() -> apis_pb2.ModelSpec:
    spec = apis_pb2.ModelSpec(name="m", signature_name="sig")
    spec.version.value = 7
    return spec


def test_predict_request_bytes_equal_protobuf() -> None:
    inputs = {"a": np.ones((2, 3), np.float32), "b": ["x", "y"], "c": np.int64(4)}
    raw = _wire.encode_predict_request(_spec(), inputs, ["out1", "out2"])
    request = apis_pb2.PredictRequest(model_spec=_spec(), output_filter=["out1", "out2"])
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(to_tensor_proto(value))
    assert raw == request.SerializeToString(deterministic=True)  # keys were sorted already
    spec, decoded, output_filter = _wire.decode_predict_request(raw)
    assert spec == _spec() and output_filter == ["out1", "out2"]
    assert decoded["b"].tolist() == [b"x", b"y"]
    np.testing.assert_array_equal(decoded["a"], inputs["a"])


def test_predict_response_round_trip_and_protobuf_input() -> None:
    response = apis_pb2.PredictResponse(model_spec=_spec())
    response.outputs["y"].CopyFrom(to_tensor_proto(np.arange(6, dtype=np.float64).reshape(2, 3)))
    typed = TensorProto(dtype=1, float_val=[2.5])  # broadcast form, goes through protobuf
    typed.tensor_shape.dim.add(size=3)
    response.outputs["z"].CopyFrom(typed)
    raw = response.SerializeToString()
    outputs, spec = _wire.decode_predict_response(raw, small_message_bytes=0)  # the byte walk
    assert spec == _spec()
    by_protobuf, spec_pb = _wire.decode_predict_response(raw)  # small: protobuf parses it
    assert spec_pb == spec and by_protobuf.keys() == outputs.keys()
    for name in outputs:
        np.testing.assert_array_equal(by_protobuf[name], outputs[name])
    assert outputs["y"].shape == (2, 3)
    assert outputs["z"].tolist() == [2.5, 2.5, 2.5]
    raw = _wire.encode_predict_response(outputs, spec)
    again, _ = _wire.decode_predict_response(raw)
    np.testing.assert_array_equal(again["y"], outputs["y"])


def test_unknown_fields_are_skipped_and_garbage_rejected() -> None:
    data = _wire.encode_tensor(np.ones(2, np.float32)) + b"\x98\x01\x05"  # field 19 varint
    np.testing.assert_array_equal(_wire.decode_tensor(data), [1, 1])
    for small in (0, _wire.SMALL_MESSAGE_BYTES):
        with pytest.raises(ValueError):
            _wire.decode_predict_response(b"\x0a\xff\x01", small_message_bytes=small)


@pytest.mark.parametrize("small", [0, _wire.SMALL_MESSAGE_BYTES])
@pytest.mark.parametrize(("dims", "nbytes"), [([2, 2], 12), ([-1, 2], 8)])
def test_bad_shapes_in_responses_are_errors(small, dims, nbytes) -> None:
    response = apis_pb2.PredictResponse()
    tensor = response.outputs["y"]
    tensor.dtype = 1
    tensor.tensor_content = b"\x00" * nbytes
    for size in dims:
        tensor.tensor_shape.dim.add(size=size)
    with pytest.raises(ValueError):
        _wire.decode_predict_response(response.SerializeToString(), small_message_bytes=small)


def _response(y: np.ndarray, version: int = 1, extra: np.ndarray | None = None) -> bytes:
    spec = apis_pb2.ModelSpec(name="m")
    spec.version.value = version
    outputs = {"y": y} if extra is None else {"y": y, "z": extra}
    return _wire.encode_predict_response(outputs, spec)


def test_layout_reads_responses_like_the_last_one() -> None:
    layouts: dict = {}
    first = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = _wire.decode_predict_outputs(_response(first, extra=np.int64(7)), layouts, "k")
    assert set(out) == {"y", "z"} and "k" in layouts
    layout = layouts["k"]
    second = first + 10
    again = _wire.decode_predict_outputs(_response(second, extra=np.int64(8)), layouts, "k")
    assert layouts["k"] is layout  # read through the layout, not parsed
    np.testing.assert_array_equal(again["y"], second)
    assert again["z"] == 8 and again["y"].flags.writeable and again["y"].flags.aligned


@pytest.mark.parametrize(
    "other",
    [
        _response(np.zeros((3, 3), np.float32)),  # another shape
        _response(np.zeros((2, 3), np.float32), version=2),  # another version
        _response(np.zeros((2, 3), np.float64)),  # another dtype
        _response(np.zeros((3, 2), np.float32)),  # same length, other dims
    ],
)
def test_layout_misses_fall_back_to_parsing(other) -> None:
    layouts: dict = {}
    _wire.decode_predict_outputs(_response(np.ones((2, 3), np.float32)), layouts, "k")
    assert layouts["k"].read(other) is None
    expected, _ = _wire.decode_predict_response(other)
    got = _wire.decode_predict_outputs(other, layouts, "k")
    np.testing.assert_array_equal(got["y"], expected["y"])
    assert got["y"].shape == expected["y"].shape


def test_no_layout_for_typed_fields_or_strings() -> None:
    response = apis_pb2.PredictResponse()
    response.outputs["y"].CopyFrom(to_tensor_proto(["a", "b"]))
    raw = response.SerializeToString()
    assert _wire.ResponseLayout.of(raw) is None
    layouts: dict = {}
    assert _wire.decode_predict_outputs(raw, layouts, "k")["y"].tolist() == [b"a", b"b"]
    assert layouts == {}


@pytest.mark.parametrize(
    "dtype", ["f4", "f8", "c8", "c16", "?", "i4", "i2", "i1", "u1", "u2", "i8", "u4", "u8", "f2"]
)
@pytest.mark.parametrize("n", [0, 1, 70, 1000])
def test_typed_fields_encode_like_protobuf_and_decode_back(dtype: str, n: int) -> None:
    # TF Serving's default Predict answer (AsProtoField): every element in the typed *_val field.
    rng = np.random.default_rng(n)
    if dtype == "?":
        arr = rng.integers(0, 2, n).astype(bool)
    elif dtype[0] in "iu":
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, n, dtype=np.uint64 if dtype == "u8" else np.int64,
                           endpoint=True).astype(dtype)
    elif dtype[0] == "c":
        arr = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
    else:
        arr = rng.standard_normal(n).astype(dtype)
    arr = arr.reshape(-1, 1)
    data = _wire.encode_tensor_fields(arr)
    proto = TensorProto.FromString(data)
    assert data == to_tensor_proto(arr, content=False).SerializeToString()
    assert proto.tensor_content == b""
    for got in (from_tensor_proto(proto), _wire.decode_tensor(data)):
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)


def test_typed_float_values_match_tensorflow_field_layout() -> None:
    arr = np.array([[1.5], [-2.0]], dtype=np.float32)
    proto = TensorProto.FromString(_wire.encode_tensor_fields(arr))
    assert list(proto.float_val) == [1.5, -2.0]
    assert [d.size for d in proto.tensor_shape.dim] == [2, 1]
    ints = TensorProto.FromString(_wire.encode_tensor_fields(np.array([-1, 300], dtype=np.int64)))
    assert list(ints.int64_val) == [-1, 300]


@pytest.mark.parametrize("output_filter", [(), ("out1", "out2")])
def test_request_after_a_serialised_spec_equals_protobuf(output_filter) -> None:
    spec = _spec().SerializeToString()
    inputs = {"a": np.ones((2, 3), np.float32), "b": ["x"], "c": np.arange(3)[::2]}
    raw = _wire.encode_predict_request_after(
        _wire.len_field(1, len(spec)) + spec, inputs, output_filter
    )
    assert raw == _wire.encode_predict_request(_spec(), inputs, output_filter)
    request = apis_pb2.PredictRequest.FromString(raw)
    assert request.model_spec == _spec() and list(request.output_filter) == list(output_filter)


@pytest.mark.parametrize("dtype", ["f4", "f8", "i8", "u1", "c8"])
@pytest.mark.parametrize("n", [1, 3, 5000])  # small arrays take one numpy path, large another
def test_layout_reads_small_and_large_arrays_aligned_and_writable(dtype: str, n: int) -> None:
    layouts: dict = {}
    # A one-byte model name shifts the array's offset: odd offsets are read too.
    for name in ("m", "mm"):
        first = np.arange(n, dtype=dtype).reshape(n, 1)
        spec = apis_pb2.ModelSpec(name=name)
        _wire.decode_predict_outputs(_wire.encode_predict_response({"y": first}, spec), layouts, name)
        second = (first + 1).astype(dtype)
        raw = _wire.encode_predict_response({"y": second}, spec)
        layout = layouts[name]
        got = layout.read(raw)
        assert got is not None
        np.testing.assert_array_equal(got["y"], second)
        assert got["y"].dtype == second.dtype and got["y"].shape == (n, 1)
        assert got["y"].flags.writeable and got["y"].flags.aligned
        # The same length with other fixed bytes is not this layout.
        other = _wire.encode_predict_response({"y": second}, apis_pb2.ModelSpec(name=name.upper()))
        assert len(other) == len(raw) and layout.read(other) is None
