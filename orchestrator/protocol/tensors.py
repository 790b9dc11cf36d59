"""numpy <-> TensorProto without TensorFlow.

Encoding writes numeric data once into `tensor_content` (little-endian bytes, as TF does) and
strings into `string_val`. Decoding reads `tensor_content` and every typed `*_val` field,
including TF's short forms: no values means zeros, fewer values than elements means the last
value repeats (one value broadcast to the shape).

Python lists and scalars follow `tf.make_tensor_proto`: floats become float32 and ints int32
(int64 if they do not fit), because that is what served models almost always take; numpy arrays
keep their dtype. Pass `dtype=` to choose. Errors are ValueError / TypeError: this module is
pure and callers decide what a bad tensor means to them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from orchestrator.protos import tensor_pb2

TensorProto = tensor_pb2.TensorProto
DataType = tensor_pb2.DataType

DT_INVALID = tensor_pb2.DT_INVALID
DT_STRING = tensor_pb2.DT_STRING
DT_HALF = tensor_pb2.DT_HALF
DT_BFLOAT16 = tensor_pb2.DT_BFLOAT16

_OBJECT = np.dtype(object)

# Host byte order of tensor_content: TF writes little-endian on every platform it ships on.
_NUMERIC: dict[int, np.dtype] = {
    tensor_pb2.DT_FLOAT: np.dtype("<f4"),
    tensor_pb2.DT_DOUBLE: np.dtype("<f8"),
    tensor_pb2.DT_HALF: np.dtype("<f2"),
    tensor_pb2.DT_INT8: np.dtype("i1"),
    tensor_pb2.DT_INT16: np.dtype("<i2"),
    tensor_pb2.DT_INT32: np.dtype("<i4"),
    tensor_pb2.DT_INT64: np.dtype("<i8"),
    tensor_pb2.DT_UINT8: np.dtype("u1"),
    tensor_pb2.DT_UINT16: np.dtype("<u2"),
    tensor_pb2.DT_UINT32: np.dtype("<u4"),
    tensor_pb2.DT_UINT64: np.dtype("<u8"),
    tensor_pb2.DT_BOOL: np.dtype("?"),
    tensor_pb2.DT_COMPLEX64: np.dtype("<c8"),
    tensor_pb2.DT_COMPLEX128: np.dtype("<c16"),
}
# Quantized types decode as their storage type; we never choose them when encoding.
_QUANTIZED: dict[int, np.dtype] = {
    tensor_pb2.DT_QINT8: np.dtype("i1"),
    tensor_pb2.DT_QUINT8: np.dtype("u1"),
    tensor_pb2.DT_QINT16: np.dtype("<i2"),
    tensor_pb2.DT_QUINT16: np.dtype("<u2"),
    tensor_pb2.DT_QINT32: np.dtype("<i4"),
}
_FLOAT8: dict[int, str] = {
    tensor_pb2.DT_FLOAT8_E5M2: "float8_e5m2",
    tensor_pb2.DT_FLOAT8_E4M3FN: "float8_e4m3fn",
    tensor_pb2.DT_FLOAT8_E4M3FNUZ: "float8_e4m3fnuz",
    tensor_pb2.DT_FLOAT8_E4M3B11FNUZ: "float8_e4m3b11fnuz",
    tensor_pb2.DT_FLOAT8_E5M2FNUZ: "float8_e5m2fnuz",
}
_ENUM_OF: dict[np.dtype, int] = {dt.newbyteorder("="): enum for enum, dt in _NUMERIC.items()}
_DECODE: dict[int, np.dtype] = {**_QUANTIZED, **_NUMERIC}
_NATIVE: dict[int, np.dtype] = {enum: dt.newbyteorder("=") for enum, dt in _DECODE.items()}
_ml_dtypes_tried = False


def _add_ml_dtypes() -> bool:
    """Register bfloat16 and float8 from ml_dtypes, on first need (its import costs 60 ms).

    Whoever holds a bfloat16 array has imported ml_dtypes already; decoding one from a server
    imports it here. False when it is not installed or already registered.
    """
    global _ml_dtypes_tried
    if _ml_dtypes_tried:
        return False
    _ml_dtypes_tried = True
    try:
        import ml_dtypes
    except ImportError:
        return False
    extra: dict[int, np.dtype] = {DT_BFLOAT16: np.dtype(ml_dtypes.bfloat16)}
    for enum, name in _FLOAT8.items():
        extra[enum] = np.dtype(getattr(ml_dtypes, name))
    _NUMERIC.update(extra)
    _DECODE.update(extra)
    _NATIVE.update(extra)
    _ENUM_OF.update({dt: enum for enum, dt in extra.items()})
    return True


_LITTLE = sys.byteorder == "little"
_INT32 = np.iinfo(np.int32)


def numpy_dtype_to_enum(dtype: Any) -> int:
    """TF DataType number for a numpy dtype; str, bytes and object arrays are DT_STRING."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return DT_STRING
    enum = _ENUM_OF.get(dt.newbyteorder("="))
    if enum is None and _add_ml_dtypes():
        enum = _ENUM_OF.get(dt.newbyteorder("="))
    if enum is None:
        raise TypeError(f"no TensorFlow dtype for numpy dtype {dt}")
    return enum


def enum_to_numpy_dtype(enum: int) -> np.dtype:
    """numpy dtype for a TF DataType number; DT_STRING is object (elements are bytes)."""
    if enum == DT_STRING:
        return _OBJECT
    dt = _NATIVE.get(enum)
    if dt is None and _add_ml_dtypes():
        dt = _NATIVE.get(enum)
    if dt is not None:
        return dt
    name = DataType.Name(enum) if enum in DataType.values() else str(enum)
    hint = " (pip install ml_dtypes)" if enum == DT_BFLOAT16 or enum in _FLOAT8 else ""
    raise TypeError(f"cannot convert TensorFlow dtype {name} to numpy{hint}")


def as_array(value: Any, dtype: Any = None) -> np.ndarray:
    """An ndarray for `value` with TF's defaults for Python data (see module docstring).

    `dtype` may be a numpy dtype-like or a TF DataType number.
    """
    if isinstance(dtype, int) and not isinstance(dtype, bool):
        dtype = enum_to_numpy_dtype(dtype)
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, np.generic):
        arr = np.asarray(value)
    else:
        arr = _python_to_array(value)
    if dtype is not None:
        dt = np.dtype(dtype)
        if dt == _OBJECT:
            if arr.dtype.kind != "O":
                arr = arr.astype(object)
        elif arr.dtype != dt:
            arr = arr.astype(dt)
    return arr


def _python_to_array(value: Any) -> np.ndarray:
    if isinstance(value, (bytes, str)):
        return np.array(value, dtype=object)
    arr = np.asarray(value)
    if arr.dtype.kind in "SU":
        # Fixed-width numpy strings drop trailing NUL bytes: keep binary values exact.
        arr = np.array(value, dtype=object)
    elif arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif (
        arr.dtype.kind == "i"
        and arr.dtype != np.int32
        and (arr.size == 0 or (arr.min() >= _INT32.min and arr.max() <= _INT32.max))
    ):
        arr = arr.astype(np.int32)
    return arr


def _to_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, (bytearray, memoryview, np.bytes_)):
        return bytes(item)
    raise TypeError(f"string tensors hold bytes or str, got {type(item).__name__}: {item!r:.60}")


def string_values(arr: np.ndarray) -> list[bytes]:
    """The elements of a str/bytes/object array as bytes, in C order."""
    if arr.dtype.kind == "U":
        return [s.encode() for s in arr.ravel().tolist()]
    return [_to_bytes(s) for s in arr.ravel().tolist()]


def content_bytes(arr: np.ndarray) -> np.ndarray:
    """`arr` as a C-contiguous little-endian array, ready to be viewed as tensor_content."""
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not _LITTLE):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr)


def to_tensor_proto(value: Any, dtype: Any = None, *, content: bool = True) -> TensorProto:
    """Encode numpy arrays, lists, scalars, bytes or str as a TensorProto.

    Numbers go to `tensor_content`, or with content=False to the typed `*_val` fields, every
    element written (TF's Tensor::AsProtoField, what TF Serving answers Predict with by default).
    """
    if isinstance(value, TensorProto):
        return value
    arr = as_array(value, dtype)
    enum = numpy_dtype_to_enum(arr.dtype)
    proto = TensorProto(dtype=enum)  # type: ignore[arg-type]  # an int is a DataType
    proto.tensor_shape.SetInParent()  # present even for scalars, as TF writes it
    dims = proto.tensor_shape.dim
    for size in arr.shape:
        dims.add(size=size)
    if enum == DT_STRING:
        proto.string_val.extend(string_values(arr))
    elif arr.size:
        if content:
            proto.tensor_content = content_bytes(arr).tobytes()
        else:
            _set_typed_values(proto, enum, arr)
    return proto


def _set_typed_values(proto: TensorProto, enum: int, arr: np.ndarray) -> None:
    flat = arr.ravel()
    if enum in (DT_HALF, DT_BFLOAT16):
        proto.half_val.extend(flat.view(np.uint16).tolist())
    elif enum in _FLOAT8:
        proto.float8_val = flat.view(np.uint8).tobytes()
    elif enum == tensor_pb2.DT_COMPLEX64:
        proto.scomplex_val.extend(flat.view(np.float32).tolist())
    elif enum == tensor_pb2.DT_COMPLEX128:
        proto.dcomplex_val.extend(flat.view(np.float64).tolist())
    else:
        getattr(proto, _TYPED_NAME.get(enum, "int_val")).extend(flat.tolist())


# The typed field of each numeric type; int32, int16, int8, uint16, uint8 and the quantized
# types all travel in int_val.
_TYPED_NAME: dict[int, str] = {
    tensor_pb2.DT_FLOAT: "float_val",
    tensor_pb2.DT_DOUBLE: "double_val",
    tensor_pb2.DT_INT64: "int64_val",
    tensor_pb2.DT_UINT32: "uint32_val",
    tensor_pb2.DT_UINT64: "uint64_val",
    tensor_pb2.DT_BOOL: "bool_val",
}


def shape_of(proto: TensorProto) -> tuple[int, ...]:
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise ValueError("a tensor with values cannot have unknown rank")
    dims = tuple([d.size for d in shape.dim])
    if dims and min(dims) < 0:
        raise ValueError(f"tensor shape {list(dims)} has a negative dimension")
    return dims


def from_tensor_proto(proto: TensorProto) -> np.ndarray:
    """Decode a TensorProto to a writable ndarray (strings as an object array of bytes)."""
    enum = proto.dtype
    dtype = enum_to_numpy_dtype(enum)
    shape = shape_of(proto)
    if enum != DT_STRING:
        content = proto.tensor_content  # read once: every read copies the bytes
        if content:
            return array_from_content(content, enum, shape)
    values = _typed_values(proto, enum, dtype)
    return _fill(values, shape, math.prod(shape), dtype, enum)


def array_from_content(content: Any, enum: int, shape: Sequence[int]) -> np.ndarray:
    """A writable, aligned array from tensor_content (bytes or any buffer) of dtype `enum`.

    One memcpy: the bytes are copied as uint8 (aligned or not, that is a plain memcpy) and
    the copy is viewed as the dtype.
    """
    native = _NATIVE.get(enum)
    if native is None:
        native = enum_to_numpy_dtype(enum)  # loads ml_dtypes, or raises the explanatory error
    count = math.prod(shape)
    nbytes = count * native.itemsize
    if len(content) != nbytes:
        raise ValueError(
            f"tensor_content has {len(content)} bytes; shape {list(shape)} of "
            f"{DataType.Name(enum)} needs {nbytes}"
        )
    flat = np.frombuffer(content, dtype=np.uint8, count=nbytes).copy()
    if _LITTLE or native.itemsize == 1:
        return flat.view(native).reshape(shape)
    return flat.view(_DECODE[enum]).astype(native).reshape(shape)  # pragma: no cover


def _typed_values(proto: TensorProto, enum: int, dtype: np.dtype) -> np.ndarray:
    if enum == DT_STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
        return values
    if enum in (DT_HALF, DT_BFLOAT16):
        # TF stores the 16 bits of each half/bfloat16 in an int32.
        return np.array(proto.half_val, dtype=np.int32).astype(np.uint16).view(dtype)
    if enum in _FLOAT8:
        return np.frombuffer(proto.float8_val, dtype=np.uint8).view(dtype)
    if enum == tensor_pb2.DT_FLOAT:
        return np.array(proto.float_val, dtype=dtype)
    if enum == tensor_pb2.DT_DOUBLE:
        return np.array(proto.double_val, dtype=dtype)
    if enum == tensor_pb2.DT_INT64:
        return np.array(proto.int64_val, dtype=dtype)
    if enum == tensor_pb2.DT_UINT32:
        return np.array(proto.uint32_val, dtype=dtype)
    if enum == tensor_pb2.DT_UINT64:
        return np.array(proto.uint64_val, dtype=dtype)
    if enum == tensor_pb2.DT_BOOL:
        return np.array(proto.bool_val, dtype=dtype)
    if enum == tensor_pb2.DT_COMPLEX64:
        return np.array(proto.scomplex_val, dtype=np.float32).view(np.complex64)
    if enum == tensor_pb2.DT_COMPLEX128:
        return np.array(proto.dcomplex_val, dtype=np.float64).view(np.complex128)
    # int32, int16, int8, uint16, uint8 and the quantized types all travel in int_val.
    return np.array(proto.int_val, dtype=np.int64).astype(dtype)


def _fill(values: np.ndarray, shape: tuple[int, ...], count: int, dtype: np.dtype, enum: int):
    n = values.size
    if n == count:
        return values.reshape(shape)
    if n > count:
        raise ValueError(
            f"{DataType.Name(enum)} tensor of shape {list(shape)} has {n} values, "
            f"more than its {count} elements"
        )
    if n == 0:
        if enum == DT_STRING:
            out = np.empty(shape, dtype=object)
            out.fill(b"")
            return out
        return np.zeros(shape, dtype=dtype)
    # TF's rule: the last value repeats to fill the shape (one value = a broadcast scalar).
    out = np.empty(count, dtype=dtype)
    out[:n] = values
    out[n:] = values[-1]
    return out.reshape(shape)


__all__ = [
    "DataType",
    "TensorProto",
    "as_array",
    "enum_to_numpy_dtype",
    "from_tensor_proto",
    "numpy_dtype_to_enum",
    "to_tensor_proto",
]
