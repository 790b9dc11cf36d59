"""numpy <-> TensorProto for every dtype TF Serving handles, both value encodings."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.protocol import tensors
from orchestrator.protocol.tensors import (
    TensorProto,
    enum_to_numpy_dtype,
    from_tensor_proto,
    numpy_dtype_to_enum,
    to_tensor_proto,
)
from orchestrator.protos import tensor_pb2
from tests.helpers.requires import require_module

require_module("ml_dtypes")
import ml_dtypes  # noqa: E402

NUMERIC = [
    (np.float16, tensor_pb2.DT_HALF),
    (np.float32, tensor_pb2.DT_FLOAT),
    (np.float64, tensor_pb2.DT_DOUBLE),
    (ml_dtypes.bfloat16, tensor_pb2.DT_BFLOAT16),
    (np.int8, tensor_pb2.DT_INT8),
    (np.int16, tensor_pb2.DT_INT16),
    (np.int32, tensor_pb2.DT_INT32),
    (np.int64, tensor_pb2.DT_INT64),
    (np.uint8, tensor_pb2.DT_UINT8),
    (np.uint16, tensor_pb2.DT_UINT16),
    (np.uint32, tensor_pb2.DT_UINT32),
    (np.uint64, tensor_pb2.DT_UINT64),
    (np.bool_, tensor_pb2.DT_BOOL),
    (np.complex64, tensor_pb2.DT_COMPLEX64),
    (np.complex128, tensor_pb2.DT_COMPLEX128),
]


def sample(dtype, shape=(2, 3)) -> np.ndarray:
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    if dt == np.bool_:
        return (np.arange(n) % 2 == 0).reshape(shape)
    if dt.kind == "c":
        return (np.arange(n) - 2.5 + 1j * np.arange(n)).astype(dt).reshape(shape)
    if dt.kind == "u":
        return (np.iinfo(dt).max - np.arange(n, dtype=dt) * 7).reshape(shape)
    if dt.kind == "i":
        return (np.iinfo(dt).min + np.arange(n, dtype=dt) * 3).reshape(shape)
    return (np.arange(n) - 2.5).astype(dt).reshape(shape)


@pytest.mark.parametrize(("dtype", "enum"), NUMERIC, ids=lambda v: str(v))
def test_numeric_round_trip_through_tensor_content(dtype, enum) -> None:
    arr = sample(dtype)
    proto = to_tensor_proto(arr)
    assert proto.dtype == enum
    assert [d.size for d in proto.tensor_shape.dim] == [2, 3]
    assert proto.tensor_content == arr.tobytes()
    back = from_tensor_proto(TensorProto.FromString(proto.SerializeToString()))
    assert back.dtype == np.dtype(dtype)
    assert back.shape == (2, 3)
    assert back.flags.writeable
    np.testing.assert_array_equal(back, arr)
    assert numpy_dtype_to_enum(np.dtype(dtype)) == enum
    assert enum_to_numpy_dtype(enum) == np.dtype(dtype)


def _typed(enum: int, arr: np.ndarray, shape) -> TensorProto:
    """The typed-field form TF itself writes for some tensors (python lists, scalars)."""
    proto = TensorProto(dtype=enum)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    flat = arr.ravel()
    if enum in (tensor_pb2.DT_HALF, tensor_pb2.DT_BFLOAT16):
        proto.half_val.extend(flat.view(np.uint16).tolist())
    elif enum == tensor_pb2.DT_FLOAT:
        proto.float_val.extend(flat.tolist())
    elif enum == tensor_pb2.DT_DOUBLE:
        proto.double_val.extend(flat.tolist())
    elif enum == tensor_pb2.DT_INT64:
        proto.int64_val.extend(flat.tolist())
    elif enum == tensor_pb2.DT_UINT32:
        proto.uint32_val.extend(flat.tolist())
    elif enum == tensor_pb2.DT_UINT64:
        proto.uint64_val.extend(flat.tolist())
    elif enum == tensor_pb2.DT_BOOL:
        proto.bool_val.extend(flat.tolist())
    elif enum == tensor_pb2.DT_COMPLEX64:
        proto.scomplex_val.extend(flat.view(np.float32).tolist())
    elif enum == tensor_pb2.DT_COMPLEX128:
        proto.dcomplex_val.extend(flat.view(np.float64).tolist())
    else:
        proto.int_val.extend(int(v) for v in flat.tolist())
    return proto


@pytest.mark.parametrize(("dtype", "enum"), NUMERIC, ids=lambda v: str(v))
def test_typed_fields_decode(dtype, enum) -> None:
    arr = sample(dtype)
    back = from_tensor_proto(_typed(enum, arr, (2, 3)))
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize(("dtype", "enum"), NUMERIC, ids=lambda v: str(v))
def test_one_value_is_broadcast_to_the_shape(dtype, enum) -> None:
    one = sample(dtype, (1,))[:1]
    back = from_tensor_proto(_typed(enum, one, (2, 2)))
    np.testing.assert_array_equal(back, np.full((2, 2), one[0], dtype=np.dtype(dtype)))


def test_fewer_values_repeat_the_last_and_none_means_zeros() -> None:
    proto = _typed(tensor_pb2.DT_INT32, np.array([1, 2], np.int32), (4,))
    np.testing.assert_array_equal(from_tensor_proto(proto), [1, 2, 2, 2])
    empty = TensorProto(dtype=tensor_pb2.DT_FLOAT)
    empty.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(from_tensor_proto(empty), np.zeros(3, np.float32))
    strings = TensorProto(dtype=tensor_pb2.DT_STRING)
    strings.tensor_shape.dim.add(size=2)
    assert from_tensor_proto(strings).tolist() == [b"", b""]


def test_too_many_values_is_an_error() -> None:
    proto = _typed(tensor_pb2.DT_FLOAT, np.ones(3, np.float32), (2,))
    with pytest.raises(ValueError, match="more than its 2 elements"):
        from_tensor_proto(proto)


def test_wrong_content_length_is_an_error() -> None:
    proto = TensorProto(dtype=tensor_pb2.DT_FLOAT, tensor_content=b"\x00" * 7)
    proto.tensor_shape.dim.add(size=2)
    with pytest.raises(ValueError, match="needs 8"):
        from_tensor_proto(proto)


def test_strings_bytes_and_str() -> None:
    proto = to_tensor_proto([["a", "é"], ["b", "c"]])
    assert proto.dtype == tensor_pb2.DT_STRING
    assert list(proto.string_val) == [b"a", "é".encode(), b"b", b"c"]
    back = from_tensor_proto(proto)
    assert back.dtype == object and back.shape == (2, 2)
    assert back[0, 1] == "é".encode()
    binary = [b"\x89PNG\x00", b"\x00\x00"]  # trailing NULs must survive
    assert from_tensor_proto(to_tensor_proto(binary)).tolist() == binary
    assert from_tensor_proto(to_tensor_proto(np.array(["x", "yz"]))).tolist() == [b"x", b"yz"]
    assert from_tensor_proto(to_tensor_proto(b"one")).tolist() == b"one"


def test_python_values_follow_tf_defaults() -> None:
    assert to_tensor_proto([1.0, 2.0]).dtype == tensor_pb2.DT_FLOAT
    assert to_tensor_proto([1, 2]).dtype == tensor_pb2.DT_INT32
    assert to_tensor_proto([2**40]).dtype == tensor_pb2.DT_INT64
    assert to_tensor_proto(True).dtype == tensor_pb2.DT_BOOL
    assert to_tensor_proto(3.5).tensor_shape.dim == []
    assert to_tensor_proto(np.float64(1.0)).dtype == tensor_pb2.DT_DOUBLE
    assert to_tensor_proto(np.arange(3)).dtype == tensor_pb2.DT_INT64
    assert to_tensor_proto([1, 2], dtype=np.float64).dtype == tensor_pb2.DT_DOUBLE
    assert to_tensor_proto([1, 2], dtype=tensor_pb2.DT_HALF).dtype == tensor_pb2.DT_HALF


def test_non_contiguous_and_big_endian_arrays() -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4).T
    np.testing.assert_array_equal(from_tensor_proto(to_tensor_proto(arr)), arr)
    big = np.arange(4, dtype=">i4")
    proto = to_tensor_proto(big)
    assert proto.tensor_content == np.arange(4, dtype="<i4").tobytes()
    np.testing.assert_array_equal(from_tensor_proto(proto), big)


def test_empty_and_scalar() -> None:
    empty = np.zeros((0, 3), np.float32)
    back = from_tensor_proto(to_tensor_proto(empty))
    assert back.shape == (0, 3) and back.dtype == np.float32
    scalar = from_tensor_proto(to_tensor_proto(np.int16(-5)))
    assert scalar.shape == () and scalar == -5


def test_unsupported_types_say_so() -> None:
    with pytest.raises(TypeError, match="no TensorFlow dtype"):
        numpy_dtype_to_enum(np.dtype("datetime64[s]"))
    with pytest.raises(TypeError, match="DT_RESOURCE"):
        enum_to_numpy_dtype(tensor_pb2.DT_RESOURCE)
    with pytest.raises(TypeError, match="bytes or str"):
        to_tensor_proto(np.array([1, "a"], dtype=object))


def test_float8_via_ml_dtypes() -> None:
    arr = np.array([0.5, -1.0, 2.0], dtype=ml_dtypes.float8_e4m3fn)
    proto = to_tensor_proto(arr)
    assert proto.dtype == tensor_pb2.DT_FLOAT8_E4M3FN
    np.testing.assert_array_equal(from_tensor_proto(proto), arr)
    typed = TensorProto(dtype=tensor_pb2.DT_FLOAT8_E4M3FN, float8_val=arr.tobytes())
    typed.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(from_tensor_proto(typed), arr)


def test_quantized_types_decode_as_storage() -> None:
    proto = TensorProto(dtype=tensor_pb2.DT_QUINT8, tensor_content=bytes([1, 2]))
    proto.tensor_shape.dim.add(size=2)
    assert from_tensor_proto(proto).tolist() == [1, 2]
    assert tensors.enum_to_numpy_dtype(tensor_pb2.DT_QINT32) == np.int32
