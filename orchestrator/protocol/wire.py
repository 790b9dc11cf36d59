"""Predict requests and responses straight to and from wire bytes, for large tensors.

The protobuf runtime copies a bytes field on set, on get, on parse and twice on serialise, so a
38 MB image batch would be copied five times between numpy and the socket. Here a request is
`b"".join` of small headers and memoryviews of the arrays (one copy, like `ndarray.tobytes`),
and a response's `tensor_content` is read in place by `np.frombuffer` (one copy, to give a
writable array). The bytes are exactly what `PredictRequest.SerializeToString()` writes; tensors
that use typed `*_val` fields (strings, or anything unusual) go through protobuf instead.
Used by the client (request out, response in) and by our server (request in, response out).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from orchestrator.protocol import tensors
from orchestrator.protos import apis_pb2

_Part = bytes | memoryview

# Wire types.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: Any, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("malformed varint")


def _fields(buf: Any, start: int, end: int) -> Iterable[tuple[int, int, int, int]]:
    """(field number, wire type, value or start, end) for each field in buf[start:end]."""
    pos = start
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
            yield number, wire, value, pos
        elif wire == _LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire == _I64:
            yield number, wire, pos, pos + 8
            pos += 8
        elif wire == _I32:
            yield number, wire, pos, pos + 4
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("truncated message")


_LEN_TAGS = {n: _varint(n << 3 | _LEN) for n in range(1, 16)}


def _len_field(number: int, payload_len: int) -> bytes:
    tag = _LEN_TAGS[number]
    return tag + (bytes((payload_len,)) if payload_len < 0x80 else _varint(payload_len))


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (not compressed), as a load generator sends it from a file."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def varint(n: int) -> bytes:
    """A protobuf varint (negatives as 10-byte two's complement, as int64 fields write them)."""
    return _varint(n)


def len_field(number: int, payload_len: int) -> bytes:
    """The tag and length that start a length-delimited field (number 1-15) of that length."""
    return _len_field(number, payload_len)


def field_spans(raw: Any, number: int) -> list[tuple[int, int]]:
    """Where every length-delimited field `number` of a serialised message sits, as
    (start, end) of its payload; the other fields are stepped over, not read."""
    return [(a, b) for n, w, a, b in _fields(raw, 0, len(raw)) if n == number and w == _LEN]


@functools.lru_cache(maxsize=1024)
def _tensor_head(enum: int, shape: tuple[int, ...]) -> bytes:
    """dtype and tensor_shape fields; cached, since a service sends the same shapes again."""
    dims = bytearray()
    for size in shape:
        dim = b"\x08" + _varint(size) if size else b""
        dims += b"\x12" + _varint(len(dim)) + dim
    return b"\x08" + _varint(enum) + b"\x12" + _varint(len(dims)) + bytes(dims)


def tensor_parts(value: Any, dtype: Any = None) -> tuple[list[_Part], int]:
    """A serialised TensorProto as parts to join, and its total length."""
    if type(value) is np.ndarray and dtype is None:
        arr = value
        enum = tensors._ENUM_OF.get(arr.dtype)  # native-order numeric: the fast path
        if enum is None:
            enum = tensors.numpy_dtype_to_enum(arr.dtype)
    elif isinstance(value, tensors.TensorProto):
        data = value.SerializeToString()
        return [data], len(data)
    else:
        arr = tensors.as_array(value, dtype)
        enum = tensors.numpy_dtype_to_enum(arr.dtype)
    if enum == tensors.DT_STRING:
        data = tensors.to_tensor_proto(arr).SerializeToString()
        return [data], len(data)
    head = _tensor_head(enum, arr.shape)
    if not arr.size:
        return [head], len(head)
    if not (arr.flags.c_contiguous and arr.dtype.isnative and tensors._LITTLE):
        arr = tensors.content_bytes(arr)
    content = memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    nbytes = content.nbytes
    head += b"\x22" + _varint(nbytes)
    return [head, content], len(head) + nbytes


def encode_tensor(value: Any, dtype: Any = None) -> bytes:
    """Serialised TensorProto bytes for `value` (same bytes as to_tensor_proto(...).Serialize)."""
    parts, _ = tensor_parts(value, dtype)
    return b"".join(parts)


# TensorProto's typed value fields (TF's Tensor::AsProtoField): field number and the little-endian
# numpy type of one packed element, for the fixed-width ones; varint fields have None.
_TYPED_FIELD: dict[int, tuple[int, str | None]] = {
    tensors.tensor_pb2.DT_FLOAT: (5, "<f4"),
    tensors.tensor_pb2.DT_DOUBLE: (6, "<f8"),
    tensors.tensor_pb2.DT_COMPLEX64: (9, "<c8"),
    tensors.tensor_pb2.DT_COMPLEX128: (12, "<c16"),
    tensors.tensor_pb2.DT_BOOL: (11, None),
    tensors.tensor_pb2.DT_INT32: (7, None),
    tensors.tensor_pb2.DT_INT16: (7, None),
    tensors.tensor_pb2.DT_INT8: (7, None),
    tensors.tensor_pb2.DT_UINT8: (7, None),
    tensors.tensor_pb2.DT_UINT16: (7, None),
    tensors.tensor_pb2.DT_QINT8: (7, None),
    tensors.tensor_pb2.DT_QUINT8: (7, None),
    tensors.tensor_pb2.DT_QINT16: (7, None),
    tensors.tensor_pb2.DT_QUINT16: (7, None),
    tensors.tensor_pb2.DT_QINT32: (7, None),
    tensors.tensor_pb2.DT_INT64: (10, None),
    tensors.tensor_pb2.DT_UINT32: (16, None),
    tensors.tensor_pb2.DT_UINT64: (17, None),
    tensors.tensor_pb2.DT_HALF: (13, None),
    tensors.tensor_pb2.DT_BFLOAT16: (13, None),
}
_PACKED_BY_FIELD = {number: dt for number, dt in _TYPED_FIELD.values() if dt is not None}


def _varints(values: np.ndarray) -> bytes:
    """Protobuf varints of int64/uint64 values, vectorised (negatives take 10 bytes, as in C++)."""
    if values.dtype.kind in "ib":
        v = values.astype(np.int64, copy=False).view(np.uint64)
    else:
        v = values.astype(np.uint64, copy=False)
    if not v.size:
        return b""
    top = int(v.max())
    width = max(1, (top.bit_length() + 6) // 7)
    if width == 1:
        return v.astype(np.uint8).tobytes()
    shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
    groups = ((v[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    nbytes = np.ones(v.shape, dtype=np.int64)
    for k in range(1, width):
        nbytes += (v >> np.uint64(7 * k)) != 0
    cols = np.arange(width)
    groups |= np.where(cols[None, :] < (nbytes - 1)[:, None], 0x80, 0).astype(np.uint8)
    return groups[cols[None, :] < nbytes[:, None]].tobytes()


def encode_tensor_fields(arr: np.ndarray) -> bytes:
    """Serialised TensorProto with the values in the typed `*_val` fields (TF's AsProtoField).

    What TF Serving answers by default (--enable_serialization_as_tensor_content=false). Every
    element is written, none elided. Fixed-width fields (float, double, complex) are packed
    straight from the array's bytes, so this costs about what tensor_content does.
    """
    enum = tensors._ENUM_OF.get(arr.dtype) if arr.dtype.isnative else None
    if enum is None:
        enum = tensors.numpy_dtype_to_enum(arr.dtype)
    if enum == tensors.DT_STRING:
        return tensors.to_tensor_proto(arr).SerializeToString()
    head = _tensor_head(enum, arr.shape)
    if not arr.size:
        return head
    field = _TYPED_FIELD.get(enum)
    if field is None:  # float8: one bytes field, left to protobuf
        return tensors.to_tensor_proto(arr, content=False).SerializeToString()
    number, packed = field
    if packed is None and arr.size <= 64:  # protobuf's C encoder wins on a few varints
        return tensors.to_tensor_proto(arr, content=False).SerializeToString()
    if packed is not None:
        data = np.ascontiguousarray(arr, dtype=packed).tobytes()
    elif enum in (tensors.DT_HALF, tensors.DT_BFLOAT16):
        data = _varints(np.ascontiguousarray(arr).view(np.uint16).ravel())
    else:
        data = _varints(arr.ravel())
    return head + _varint(number << 3 | _LEN) + _varint(len(data)) + data


@functools.lru_cache(maxsize=1024)
def _array_entry_head(number: int, name: str, enum: int, shape: tuple[int, ...], nbytes: int):
    """Everything of a map<string, TensorProto> entry before an array's bytes, cached."""
    key = name.encode()
    head = _tensor_head(enum, shape) + b"\x22" + _varint(nbytes)
    length = len(head) + nbytes
    entry = _len_field(1, len(key)) + key + _len_field(2, length)
    return _len_field(number, len(entry) + length) + entry + head


def _tensor_map_parts(number: int, mapping: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    for name, value in mapping.items():
        if (
            type(value) is np.ndarray
            and value.size
            and value.flags.c_contiguous
            and value.dtype.isnative
            and tensors._LITTLE
        ):
            enum = tensors._ENUM_OF.get(value.dtype)
            if enum is not None:
                # The common case in two steps: a cached head, then the array itself (join
                # reads any C-contiguous buffer, so its bytes are copied once, into the request).
                out.append(_array_entry_head(number, name, enum, value.shape, value.nbytes))
                out.append(value)
                continue
        key = name.encode()
        try:
            parts, length = tensor_parts(value)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{name!r}: {e}") from e
        entry = _len_field(1, len(key)) + key + _len_field(2, length)
        out.append(_len_field(number, len(entry) + length) + entry)
        out.extend(parts)
    return out


def _message_part(number: int, message: Any) -> list[_Part]:
    """A message field; `message` may be a message or its serialised bytes."""
    if message is None:
        return []
    data = message if isinstance(message, bytes) else message.SerializeToString()
    return [_len_field(number, len(data)) + data]


def encode_predict_request(
    model_spec: apis_pb2.ModelSpec | bytes | None,
    inputs: Mapping[str, Any],
    output_filter: Iterable[str] = (),
) -> bytes:
    return encode_predict_request_after(
        b"".join(_message_part(1, model_spec)), inputs, output_filter
    )


def encode_predict_request_after(
    spec_field: bytes, inputs: Mapping[str, Any], output_filter: Iterable[str] = ()
) -> bytes:
    """encode_predict_request with the model_spec field already serialised, tag and length
    included (`len_field(1, len(spec)) + spec`): what a client keeps per model it calls."""
    parts = [spec_field]
    parts += _tensor_map_parts(2, inputs)
    for name in output_filter:
        data = name.encode()
        parts.append(_len_field(3, len(data)) + data)
    return b"".join(parts)


def encode_predict_response(
    outputs: Mapping[str, Any], model_spec: apis_pb2.ModelSpec | bytes | None = None
) -> bytes:
    return b"".join(_tensor_map_parts(1, outputs) + _message_part(2, model_spec))


def _decode_shape(buf: Any, pos: int, end: int) -> list[int]:
    dims: list[int] = []
    while pos < end:
        key, pos = _read_varint(buf, pos)
        if key == 0x12:  # dim
            length, pos = _read_varint(buf, pos)
            size, stop = 0, pos + length
            while pos < stop:
                dkey, pos = _read_varint(buf, pos)
                if dkey == 0x08:  # size (int64: two's complement above 2**63)
                    size, pos = _read_varint(buf, pos)
                    if size >= 1 << 63:
                        size -= 1 << 64
                elif dkey & 7 == _LEN:  # name
                    n, pos = _read_varint(buf, pos)
                    pos += n
                else:
                    _, pos = _read_varint(buf, pos)
            dims.append(size)
        elif key == 0x18:  # unknown_rank
            flag, pos = _read_varint(buf, pos)
            if flag:
                raise ValueError("a tensor with values cannot have unknown rank")
        else:
            raise ValueError(f"unexpected field {key >> 3} in TensorShapeProto")
    return dims


def decode_tensor(buf: Any, start: int = 0, end: int | None = None) -> np.ndarray:
    """A writable ndarray from serialised TensorProto bytes buf[start:end].

    The common form (dtype, shape, tensor_content) is read here in place; anything else
    (typed *_val fields, strings) is handed to protobuf.
    """
    if end is None:
        end = len(buf)
    enum = 0
    dims: list[int] = []
    content: tuple[int, int] | None = None
    field = 0
    pos = start
    while pos < end:
        key, pos = _read_varint(buf, pos)
        if key == 0x08:  # dtype
            enum, pos = _read_varint(buf, pos)
        elif key == 0x12:  # tensor_shape
            length, pos = _read_varint(buf, pos)
            dims = _decode_shape(buf, pos, pos + length)
            pos += length
        elif key == 0x22 or (key & 7 == _LEN and key >> 3 in _PACKED_BY_FIELD and not content):
            # tensor_content, or a packed fixed-width typed field: the same little-endian bytes
            length, pos = _read_varint(buf, pos)
            content = (pos, pos + length)
            field = key >> 3
            pos += length
        elif key == 0x18:  # version_number
            _, pos = _read_varint(buf, pos)
        else:
            content = None
            break
    else:
        if pos != end:
            raise ValueError("truncated TensorProto")
        if (
            content is not None
            and enum != tensors.DT_STRING
            and (field == 4 or _TYPED_FIELD.get(enum, (0,))[0] == field)
        ):
            if any(d < 0 for d in dims):
                raise ValueError(f"tensor shape {dims} has a negative dimension")
            view = memoryview(buf)[content[0] : content[1]]
            if field == 4 or len(view) == math.prod(dims) * tensors._NATIVE[enum].itemsize:
                return tensors.array_from_content(view, enum, dims)
    return tensors.from_tensor_proto(tensors.TensorProto.FromString(bytes(buf[start:end])))


def _decode_tensor_map_entry(buf: Any, start: int, end: int) -> tuple[str, np.ndarray]:
    key = ""
    value: np.ndarray | None = None
    for number, wire, a, b in _fields(buf, start, end):
        if number == 1 and wire == _LEN:
            key = bytes(buf[a:b]).decode()
        elif number == 2 and wire == _LEN:
            value = decode_tensor(buf, a, b)
    if value is None:  # an absent value is the default TensorProto: DT_INVALID
        raise ValueError(f"tensor {key!r} has no value")
    return key, value


# Below this size protobuf's C parser beats walking the bytes in Python; above it, the copies
# protobuf makes of tensor_content cost more than the walk.
SMALL_MESSAGE_BYTES = 16 * 1024


def decode_predict_response(
    raw: Any, small_message_bytes: int = SMALL_MESSAGE_BYTES
) -> tuple[dict[str, np.ndarray], apis_pb2.ModelSpec]:
    if len(raw) < small_message_bytes:
        try:
            response = apis_pb2.PredictResponse.FromString(bytes(raw))
        except DecodeError as e:
            raise ValueError(f"malformed PredictResponse: {e}") from e
        decoded = {}
        for name, proto in response.outputs.items():
            native = tensors._NATIVE.get(proto.dtype) if tensors._LITTLE else None
            content = proto.tensor_content if native is not None else b""
            if content:  # the common case, with as few numpy calls as can be
                dims = [d.size for d in proto.tensor_shape.dim]
                try:
                    if dims and min(dims) < 0:  # reshape would read -1 as "infer"
                        raise ValueError
                    decoded[name] = np.frombuffer(content, native).reshape(dims).copy()
                    continue
                except ValueError:
                    pass  # a size mismatch: let from_tensor_proto say what is wrong
            decoded[name] = tensors.from_tensor_proto(proto)
        return decoded, response.model_spec
    outputs: dict[str, np.ndarray] = {}
    spec = apis_pb2.ModelSpec()
    for number, wire, a, b in _fields(raw, 0, len(raw)):
        if number == 1 and wire == _LEN:
            key, value = _decode_tensor_map_entry(raw, a, b)
            outputs[key] = value
        elif number == 2 and wire == _LEN:
            spec.MergeFromString(bytes(raw[a:b]))
    return outputs, spec


_SMALL_ARRAY_BYTES = 32 * 1024  # above this, copying as bytes wins (measured)


class ResponseLayout:
    """Where the arrays sit in one PredictResponse, to read the next one like it quickly.

    A service gets the same response shape again and again. When a new response has the same
    length and the same bytes everywhere but inside the arrays, its arrays are read at the
    known offsets without parsing anything. `of` returns None for responses it cannot
    describe (typed *_val fields, strings): those are always parsed.
    """

    __slots__ = ("arrays", "fixed", "size")

    def __init__(self, size: int, fixed: list[tuple[int, bytes]], arrays: list[tuple]) -> None:
        self.size = size
        self.fixed = fixed
        self.arrays = arrays

    @classmethod
    def of(cls, raw: bytes) -> ResponseLayout | None:
        arrays: list[tuple] = []
        holes: list[tuple[int, int]] = []
        for number, wire, a, b in _fields(raw, 0, len(raw)):
            if number != 1 or wire != _LEN:
                continue
            name, span = None, None
            for enumber, ewire, ea, eb in _fields(raw, a, b):
                if enumber == 1 and ewire == _LEN:
                    name = bytes(raw[ea:eb]).decode()
                elif enumber == 2 and ewire == _LEN:
                    span = (ea, eb)
            if name is None or span is None:
                return None
            enum, dims, content, cfield = 0, [], None, 0
            for tnumber, twire, ta, tb in _fields(raw, span[0], span[1]):
                if tnumber == 1 and twire == _VARINT:
                    enum = ta
                elif tnumber == 2 and twire == _LEN:
                    dims = _decode_shape(raw, ta, tb)
                elif (tnumber == 4 or tnumber in _PACKED_BY_FIELD) and twire == _LEN and not content:
                    content, cfield = (ta, tb), tnumber  # tensor_content or packed float_val...
                else:
                    return None
            native = tensors._NATIVE.get(enum)
            if content is None or native is None or not tensors._LITTLE or min(dims, default=0) < 0:
                return None
            if cfield != 4 and _TYPED_FIELD.get(enum, (0,))[0] != cfield:
                return None
            if math.prod(dims) * native.itemsize != content[1] - content[0]:
                return None
            arrays.append((name, content[0], content[1] - content[0], native, tuple(dims)))
            holes.append(content)
        fixed, pos = [], 0
        for start, end in sorted(holes):
            fixed.append((pos, bytes(raw[pos:start])))
            pos = end
        fixed.append((pos, bytes(raw[pos:])))
        return cls(len(raw), fixed, arrays)

    def read(self, raw: bytes) -> dict[str, np.ndarray] | None:
        """The arrays of `raw` if it has this layout, else None."""
        if len(raw) != self.size:
            return None
        for start, segment in self.fixed:
            if not raw.startswith(segment, start):  # compares in place, no slice copied
                return None
        out = {}
        for name, offset, nbytes, native, dims in self.arrays:
            if nbytes <= _SMALL_ARRAY_BYTES:  # fewer numpy calls; an unaligned copy is cheap
                out[name] = np.ndarray(dims, native, raw, offset).copy()
            else:  # copied as bytes, a plain memcpy whatever the alignment
                out[name] = np.frombuffer(raw, np.uint8, nbytes, offset).copy().view(native).reshape(dims)
        return out


def decode_predict_outputs(raw: bytes, layouts: dict[Any, ResponseLayout], key: Any) -> dict:
    """A response's outputs, reusing the layout last seen under `key` when it still fits."""
    layout = layouts.get(key)
    if layout is not None:
        outputs = layout.read(raw)
        if outputs is not None:
            return outputs
    outputs = decode_predict_response(raw)[0]
    if len(layouts) > 256:
        layouts.clear()
    new = ResponseLayout.of(raw)
    if new is not None:
        layouts[key] = new
    else:
        layouts.pop(key, None)
    return outputs


def decode_predict_request(
    raw: Any,
) -> tuple[apis_pb2.ModelSpec, dict[str, np.ndarray], list[str]]:
    """(model_spec, inputs, output_filter) of a serialised PredictRequest."""
    spec = apis_pb2.ModelSpec()
    inputs: dict[str, np.ndarray] = {}
    output_filter: list[str] = []
    for number, wire, a, b in _fields(raw, 0, len(raw)):
        if number == 1 and wire == _LEN:
            spec.MergeFromString(bytes(raw[a:b]))
        elif number == 2 and wire == _LEN:
            key, value = _decode_tensor_map_entry(raw, a, b)
            inputs[key] = value
        elif number == 3 and wire == _LEN:
            output_filter.append(bytes(raw[a:b]).decode())
    return spec, inputs, output_filter
