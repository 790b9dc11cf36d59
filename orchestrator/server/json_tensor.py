"""REST JSON <-> numpy with TF Serving's rules (util/json_tensor.cc), error messages included.

- Row format `{"instances": [...]}` and columnar `{"inputs": ...}`; binary as `{"b64": "..."}`.
- Outputs whose alias ends in `_bytes` (DT_STRING) are written as `{"b64": ...}`.
- NaN / Infinity / -Infinity are read and written as bare tokens, like rapidjson does upstream.
- Floats are written in their shortest round-trip form for their own width (0.1f -> 0.1).

A fast path converts well-formed input with one `np.asarray`; anything it cannot take is handed to
the slow walker, which reproduces TF Serving's exact error for it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

import numpy as np
import orjson

from orchestrator import limits
from orchestrator.limits import JSON_PARSER_DEPTH
from orchestrator.protocol.tensors import enum_to_numpy_dtype
from orchestrator.server.status import invalid

DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_UINT32, DT_UINT64, DT_HALF, DT_BFLOAT16 = 9, 10, 22, 23, 19, 14
_FLOATS = {DT_FLOAT, DT_DOUBLE, DT_HALF, DT_BFLOAT16}
_INTS = {DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_INT64, DT_UINT32, DT_UINT64}
_TF_NAMES = {
    DT_FLOAT: "float",
    DT_DOUBLE: "double",
    DT_INT32: "int32",
    DT_UINT8: "uint8",
    DT_INT16: "int16",
    DT_INT8: "int8",
    DT_STRING: "string",
    DT_INT64: "int64",
    DT_BOOL: "bool",
    DT_UINT32: "uint32",
    DT_UINT64: "uint64",
    DT_HALF: "half",
    DT_BFLOAT16: "bfloat16",
}
_INT_RANGE = {
    DT_INT32: (-(2**31), 2**31 - 1),
    DT_INT16: (-(2**31), 2**31 - 1),  # upstream checks IsInt() for the narrow types
    DT_INT8: (-(2**31), 2**31 - 1),
    DT_UINT8: (-(2**31), 2**31 - 1),
    DT_INT64: (-(2**63), 2**63 - 1),
    DT_UINT32: (0, 2**32 - 1),
    DT_UINT64: (0, 2**64 - 1),
}
_OPT = orjson.OPT_SERIALIZE_NUMPY
LIMITS = limits.current()


# -- parsing --------------------------------------------------------------------------------------
def loads(body: bytes) -> Any:
    """Parse a request body; NaN/Infinity accepted; TF Serving's messages for bad JSON."""
    if not body or body.isspace():
        raise invalid("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        doc = _loads_slow(body, e)
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {debug_string(doc)} Is not object")
    return doc


class _TooBig(Exception):
    def __init__(self, text: str) -> None:
        self.text = text


def _number_too_big(body: bytes, text: str) -> Exception:
    # rapidjson's kParseErrorNumberTooBig, at the offset where the number starts
    m = re.search(rb"(?<![0-9.eE+-])" + re.escape(text.encode()) + rb"(?![0-9.eE])", body)
    return invalid(
        f"JSON Parse error: Number too big to be stored in double. at offset: "
        f"{m.start() if m else 0}"
    )


def _float(text: str) -> float:
    v = float(text)
    if math.isinf(v):
        raise _TooBig(text)
    return v


def _int(text: str) -> int | float:
    # Beyond 64 bits rapidjson (and orjson) read an integer as a double; never int() a huge text.
    if len(text.lstrip("-")) <= 20:
        v = int(text)
        if -(2**63) <= v < 2**64:
            return v
    return _float(text)


def _loads_slow(body: bytes, e: orjson.JSONDecodeError) -> Any:
    msg = e.msg.lower()
    if "infinity when parsed as double" in msg:
        raise invalid(
            f"JSON Parse error: Number too big to be stored in double. at offset: {e.pos}"
        ) from None
    if "depth limit" in msg or "recursion" in msg:
        raise _too_deep(e.pos) from None
    try:  # the stdlib parser accepts NaN, Infinity and -Infinity, as rapidjson does upstream
        return json.loads(body, parse_float=_float, parse_int=_int)
    except _TooBig as big:
        raise _number_too_big(body, big.text) from None
    except RecursionError:
        raise _too_deep(e.pos) from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise invalid(f"JSON Parse error: {_reason(e)} at offset: {e.pos}") from None


def _too_deep(pos: int) -> Exception:
    return invalid(
        f"JSON Parse error: the document is nested deeper than {JSON_PARSER_DEPTH} levels "
        f"at offset: {pos}"
    )


def _reason(e: orjson.JSONDecodeError) -> str:
    msg = e.msg
    if "unexpected end" in msg.lower() or "eof" in msg.lower():
        return "Missing a closing bracket or brace."
    return "Invalid value."


def debug_string(val: Any) -> str:
    try:
        return json.dumps(val, separators=(",", ":"), allow_nan=True)
    except RecursionError:  # a value nested near the parser's limit: name it, do not print it
        return f"<{_type_string(val)} nested too deep to print>"
    except (TypeError, ValueError):  # pragma: no cover
        return repr(val)


def _type_string(val: Any) -> str:
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def _is_b64(val: Any) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)


def _type_error(val: Any, dt: int) -> Exception:
    return invalid(
        f"JSON Value: {debug_string(val)} Type: {_type_string(val)} is not of expected type: "
        f"{_TF_NAMES.get(dt, str(dt))}"
    )


def _b64decode(val: Any) -> bytes:
    if not _is_b64(val):
        return _raise(
            invalid(f"JSON Value: {debug_string(val)} not formatted correctly for base64 data")
        )
    text = val["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    except (binascii.Error, ValueError):
        return _raise(invalid("Unable to base64 decode"))


def _raise(e: Exception) -> Any:
    raise e


def _scalar(val: Any, dt: int) -> Any:
    """One leaf value, checked like AddValueToTensor."""
    if isinstance(val, dict):
        if dt == DT_STRING:
            return _b64decode(val)
        raise _type_error(val, dt)
    is_num = isinstance(val, (int, float)) and not isinstance(val, bool)
    if dt in _FLOATS:
        if not is_num:
            raise _type_error(val, dt)
        return float(val)
    if dt in _INTS:
        if not isinstance(val, int) or isinstance(val, bool):
            raise _type_error(val, dt)
        lo, hi = _INT_RANGE[dt]
        if not lo <= val <= hi:
            raise _type_error(val, dt)
        return val
    if dt == DT_STRING:
        if not isinstance(val, str):
            raise _type_error(val, dt)
        return val.encode("utf-8", "surrogatepass")
    if dt == DT_BOOL:
        if not isinstance(val, bool):
            raise _type_error(val, dt)
        return val
    raise invalid(f"Conversion of JSON Value: {debug_string(val)} to type: {_TF_NAMES.get(dt, dt)}")


def _dense_shape(val: Any) -> list[int]:
    shape = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _fill(val: Any, level: int, shape: list[int], dt: int, out: list[Any]) -> None:
    rank = len(shape)
    if not isinstance(val, list):
        if level != rank:
            raise invalid(
                f"JSON Value: {debug_string(val)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {rank}"
            )
        out.append(_scalar(val, dt))
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise invalid(
            f"Encountered list at unexpected size: {len(val)} at level: {level} expected size: "
            f"{shape[level]}"
        )
    for v in val:
        _fill(v, level + 1, shape, dt, out)


def _np_dtype(dt: int) -> np.dtype:
    try:
        return enum_to_numpy_dtype(dt)
    except (ValueError, KeyError, TypeError):
        raise invalid(
            f"Conversion of JSON to type: {_TF_NAMES.get(dt, dt)} is not supported"
        ) from None


def _check_rank(rank: int) -> None:
    if rank > LIMITS.max_tensor_rank:
        raise invalid(
            f"JSON tensor is nested {rank} levels deep; tensors of rank above "
            f"{LIMITS.max_tensor_rank} are not accepted (TFS_MAX_TENSOR_RANK)"
        )


def _check_inputs(count: int) -> None:
    if count > LIMITS.max_inputs:
        raise invalid(
            f"Request names {count} inputs; at most {LIMITS.max_inputs} are accepted "
            "(TFS_MAX_INPUTS)"
        )


def _slow_array(val: Any, dt: int) -> np.ndarray:
    shape = _dense_shape(val)
    _check_rank(len(shape))
    flat: list[Any] = []
    _fill(val, 0, shape, dt, flat)
    if dt == DT_STRING:
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    return np.array(flat, dtype=_np_dtype(dt)).reshape(shape)


def _fast_array(val: Any, dt: int) -> np.ndarray | None:
    """np.asarray when the JSON is a clean dense tensor of the right kind, else None."""
    try:
        a = np.asarray(val)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = a.dtype.kind
    if dt in _FLOATS:
        if kind in "fiu" or (kind == "f" and a.size == 0):
            return a.astype(_np_dtype(dt), copy=False)
        if a.size == 0:
            return a.astype(_np_dtype(dt))
        return None
    if dt in _INTS:
        if kind in "iu" or a.size == 0:
            lo, hi = _INT_RANGE[dt]
            if a.size and (a.min() < lo or a.max() > hi):
                return None
            return a.astype(_np_dtype(dt), copy=False)
        return None
    if dt == DT_BOOL:
        return a if kind == "b" else (a.astype(bool) if a.size == 0 else None)
    if dt == DT_STRING:
        if kind == "U":
            out = np.empty(a.shape, dtype=object)
            flat = out.reshape(-1)
            flat[:] = [s.encode("utf-8") for s in a.reshape(-1).tolist()]
            return out
        return None
    return None


def json_to_array(val: Any, dt: int) -> np.ndarray:
    a = _fast_array(val, dt)
    if a is None:
        return _slow_array(val, dt)
    _check_rank(a.ndim)
    return a


def row_instances(instances: list[Any], dt: int) -> np.ndarray | None:
    """The array of a plain row-format `instances` list of numbers for a single input of
    floating dtype `dt`, as instances_to_arrays makes it; None for anything else (the general
    path answers that, errors included)."""
    if dt not in _FLOATS:
        return None
    a = _fast_array(instances, dt)
    if a is None or a.ndim == 0 or a.ndim > LIMITS.max_tensor_rank or a.size == 0:
        return None
    return a


def instances_to_arrays(instances: list[Any], inputs: dict[str, int]) -> dict[str, np.ndarray]:
    """Row format: stack each instance along a new first dimension (FillTensorMapFromInstancesList)."""
    first = instances[0]
    _check_rank(len(_dense_shape(instances)))
    if isinstance(first, dict):
        _check_inputs(len(first))
    objects = isinstance(first, dict) and not _is_b64(first)
    if not objects and len(inputs) != 1:  # a b64 object is a value, not an object of inputs
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    if not objects:
        ((name, dt),) = inputs.items()
        fast = _fast_array(instances, dt)
        if fast is not None and not any(isinstance(i, dict) for i in instances[:1]):
            return {name: fast}
        return {name: _stack_slow(instances, name, dt, objects=False)}
    names = sorted(inputs)
    cols: dict[str, list[Any]] = {n: [] for n in names}
    for i, elem in enumerate(instances):
        if not isinstance(elem, dict) or _is_b64(elem):
            raise invalid(f"Expecting object but got list at item {i} of input list")
        for key in elem:
            if key not in inputs:
                raise invalid(
                    f"Failed to process element: {i} key: {key} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                )
        if len(elem) != len(names) or any(n not in elem for n in names):
            raise invalid(
                f"Failed to process element: {i} of 'instances' list. JSON object: "
                f"{debug_string(elem)} keys must be equal to: {','.join(names)}"
            )
        for n in names:
            cols[n].append(elem[n])
    out = {}
    for n in names:
        fast = _fast_array(cols[n], inputs[n])
        out[n] = fast if fast is not None else _stack_slow(cols[n], n, inputs[n], objects=True)
    return out


def _stack_slow(items: list[Any], name: str, dt: int, *, objects: bool) -> np.ndarray:
    arrays = []
    size = shape = None
    for i, item in enumerate(items):
        if not objects and isinstance(item, dict) and not _is_b64(item):
            raise invalid(f"Expecting value/list but got object at item {i} of input list")
        try:
            a = _slow_array(item, dt)
            if size is None:
                size, shape = a.size, a.shape
                _check_rank(a.ndim + 1)
            elif a.size != size:
                raise invalid(f"Expecting tensor size: {size} but got: {a.size}")
            elif a.shape != shape:
                raise invalid(f"Expecting shape {_shape_str(shape)} but got: {_shape_str(a.shape)}")
        except Exception as e:
            key = f" key: {name}" if objects else ""
            raise invalid(
                f"Failed to process element: {i}{key} of 'instances' list. Error: "
                f"INVALID_ARGUMENT: {getattr(e, 'message', e)}"
            ) from None
        arrays.append(a)
    if dt == DT_STRING:
        out = np.empty((len(arrays), *(shape or ())), dtype=object)
        for i, a in enumerate(arrays):
            if a.ndim == 0:
                out[i] = a.item()
            else:
                out[i, ...] = a
        return out
    return np.stack(arrays)


def _shape_str(shape: Any) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]" if shape else "[]"


def inputs_to_arrays(val: Any, inputs: dict[str, int]) -> dict[str, np.ndarray]:
    """Columnar format (FillTensorMapFromInputsMap)."""
    if not isinstance(val, dict) or _is_b64(val):
        if len(inputs) > 1:
            raise invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        ((name, dt),) = inputs.items()
        return {name: json_to_array(val, dt)}
    _check_inputs(len(val))
    out = {}
    for name in sorted(inputs):
        if name not in val:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        out[name] = json_to_array(val[name], inputs[name])
    return out


def parse_predict(doc: dict[str, Any], get_inputs) -> tuple[str, dict[str, np.ndarray], bool]:  # type: ignore[no-untyped-def]
    """-> (signature_name, arrays, row_format). `get_inputs(signature_name)` gives alias->dtype."""
    sig = doc.get("signature_name", "")
    if not isinstance(sig, str):
        raise invalid(
            f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key must "
            "be a string value."
        )
    inputs = get_inputs(sig)
    if not inputs:
        raise invalid(f"Failed to get input map for signature: {sig or 'DEFAULT'}")
    if "instances" in doc:
        if "inputs" in doc:
            raise invalid(
                f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of "
                "'inputs' or 'instances' keys to exist "
            )
        inst = doc["instances"]
        if not isinstance(inst, list):
            raise invalid(
                f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array"
            )
        if not inst:
            raise invalid(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        return sig, instances_to_arrays(inst, inputs), True
    if "inputs" in doc:
        return sig, inputs_to_arrays(doc["inputs"], inputs), False
    raise invalid("Missing 'inputs' or 'instances' key")


# -- classify / regress input ------------------------------------------------------------------------
def _feature(name: str, content: Any, feature: Any) -> None:
    values = content if isinstance(content, list) else [content]
    kind = None

    def check(k: str) -> None:
        nonlocal kind
        if kind is not None and kind != k:
            raise invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")
        kind = k

    for v in values:
        if v is None or isinstance(v, list):
            raise invalid(
                f"Feature: {name} has element with unexpected JSON type: {_type_string(v)}"
            )
        if isinstance(v, bool):
            check("int64")
            feature.int64_list.value.append(1 if v else 0)
        elif isinstance(v, dict):
            if not _is_b64(v):
                raise invalid(
                    f"Feature: {name} has element with unexpected JSON type: {_type_string(v)}"
                )
            check("bytes")
            feature.bytes_list.value.append(_b64decode(v))
        elif isinstance(v, str):
            check("bytes")
            feature.bytes_list.value.append(v.encode("utf-8"))
        elif isinstance(v, float):
            check("float")
            feature.float_list.value.append(v)
        else:
            check("int64")
            if v >= 2**63:
                raise invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
            feature.int64_list.value.append(v)


def example_bytes(obj: Any) -> bytes:
    """A JSON object -> serialized tf.Example (MakeExampleFromJsonObject)."""
    from tensorflow.core.example import example_pb2

    if not isinstance(obj, dict):
        raise invalid(f"Example must be JSON object but got JSON {_type_string(obj)}")
    ex = example_pb2.Example()
    for name, content in obj.items():
        _feature(name, content, ex.features.feature[name])
    return ex.SerializeToString()


def parse_examples(doc: dict[str, Any], method: str) -> tuple[str, list[bytes]]:
    """-> (signature_name, serialized examples with the context merged into each)."""
    sig = doc.get("signature_name", "")
    if not isinstance(sig, str):
        raise invalid(
            f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key must "
            "be a string value."
        )
    context = example_bytes(doc["context"]) if "context" in doc else b""
    if "examples" not in doc:
        raise invalid(
            f"JSON Value: {debug_string(doc)} When method is {method}, key 'examples' is expected "
            "and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid(
            f"JSON Value: {debug_string(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise invalid(f"JSON Value: {debug_string(doc)} 'examples' value is an empty array")
    # Concatenated serializations merge: context features first, the example's own win.
    return sig, [context + example_bytes(e) for e in examples]


# -- writing ---------------------------------------------------------------------------------------
def _finite(a: np.ndarray) -> bool:
    if a.dtype.kind not in "fc":
        return True
    if a.size <= _SMALL and a.dtype.kind == "f":  # two numpy calls cost more than the loop
        return all(map(math.isfinite, a.ravel().tolist()))
    return bool(np.isfinite(a).all())


_SMALL = 64


def _jsonable(a: np.ndarray, as_bytes: bool) -> Any:
    """An array orjson can write, or nested lists for strings / non-finite floats."""
    kind = a.dtype.kind
    if kind == "f":  # the common case first
        if _finite(a):
            return a
        return _nest([_Raw(v) for v in a.reshape(-1)], a.shape)
    if kind in "OSU":

        def conv(v: Any) -> Any:
            b = v if isinstance(v, bytes) else str(v).encode()
            if as_bytes:
                return {"b64": base64.b64encode(b).decode("ascii")}
            return b.decode("utf-8", "replace")

        flat = [conv(v) for v in a.reshape(-1).tolist()]
        return _nest(flat, a.shape)
    if a.dtype.name == "bfloat16":  # ml_dtypes' kind is "V": widen first, then check finiteness
        a = a.astype(np.float32)
    if a.dtype.kind == "f" and not _finite(a):
        flat = [_Raw(v) for v in a.reshape(-1)]
        return _nest(flat, a.shape)
    if a.dtype.kind == "c":
        return a.astype(np.float32)
    return a


def _nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return flat[0]
    for d in reversed(shape[1:]):
        flat = (
            [flat[i : i + d] for i in range(0, len(flat), d)]
            if d
            else [[] for _ in range(len(flat))]
        )
    if shape[0] == 0:
        return []
    return flat


class _Raw:
    """A float written as TF Serving does, including NaN / Infinity / -Infinity."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def text(self) -> str:
        v = float(self.v)
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        return orjson.dumps(self.v, option=_OPT).decode()


_RAW_MARK = "__tfs_raw_value__"


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, option=_OPT)
    except TypeError:
        pass
    # Slow path: some values are _Raw (non-finite floats). Write markers, then splice.
    raws: list[_Raw] = []

    def default(o: Any) -> Any:
        if isinstance(o, _Raw):
            raws.append(o)
            return f"{_RAW_MARK}{len(raws) - 1}"
        raise TypeError(type(o).__name__)

    text = orjson.dumps(obj, default=default, option=_OPT).decode()
    for i, r in enumerate(raws):
        text = text.replace(f'"{_RAW_MARK}{i}"', r.text(), 1)
    return text.encode()


# -- response layout ------------------------------------------------------------------------------
# TF Serving writes its JSON with rapidjson's PrettyWriter (4-space indent), switching to
# kFormatSingleLineArray for each predictions item, each classification row and the regression
# list, so the doc example answers exactly
#     {\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}
# _Pretty reproduces that writer; numeric arrays take fast paths through orjson.


def _is_plain_numbers(v: Any) -> bool:
    """True when v's JSON has no strings or objects, so "," only ever separates values."""
    if isinstance(v, np.ndarray):
        return v.dtype.kind in "biuf"
    if isinstance(v, (list, tuple)):
        return all(_is_plain_numbers(x) for x in v)
    return not isinstance(v, (str, dict))


def _single_line(v: Any) -> bytes:
    """v in single-line-array mode, when _is_plain_numbers(v): orjson's text, ", " between."""
    return dumps(v).replace(b",", b", ")


def _expanded(v: Any, depth: int) -> bytes:
    """v in rapidjson's default mode at nesting depth `depth`, when _is_plain_numbers(v).

    orjson's 2-space layout has the same line breaks as rapidjson's default mode; only the
    indentation differs (and the JSON text has no raw newline inside a string).
    """
    if isinstance(v, np.ndarray) and _finite(v):
        text = orjson.dumps(v, option=_OPT | orjson.OPT_INDENT_2)
    else:
        text = _indent2(v)
    pad = b" " * (4 * depth)
    lines = text.split(b"\n")
    out = [lines[0]]
    for line in lines[1:]:
        stripped = line.lstrip(b" ")
        out.append(pad + b" " * (2 * (len(line) - len(stripped))) + stripped)
    return b"\n".join(out)


def _indent2(v: Any) -> bytes:
    w = _Pretty(indent=2)
    w.value(v)
    return w.text()


class _Pretty:
    """rapidjson::PrettyWriter: prefix rules, indentation and kFormatSingleLineArray."""

    def __init__(self, indent: int = 4) -> None:
        self.out: list[bytes] = []
        self.levels: list[list[Any]] = []  # [in_array, value_count]
        self.single = False
        self.indent = indent

    def text(self) -> bytes:
        return b"".join(self.out)

    def _newline_indent(self) -> None:
        self.out.append(b"\n" + b" " * (self.indent * len(self.levels)))

    def _prefix(self) -> None:
        if not self.levels:
            return
        level = self.levels[-1]
        if level[0]:
            if level[1]:
                self.out.append(b", " if self.single else b",")
            if not self.single:
                self._newline_indent()
        else:
            if level[1]:
                self.out.append(b",\n" if level[1] % 2 == 0 else b": ")
            else:
                self.out.append(b"\n")
            if level[1] % 2 == 0:
                self.out.append(b" " * (self.indent * len(self.levels)))
        level[1] += 1

    def start(self, array: bool) -> None:
        self._prefix()
        self.out.append(b"[" if array else b"{")
        self.levels.append([array, 0])

    def end(self) -> None:
        array, count = self.levels.pop()
        if count and not (array and self.single):
            self._newline_indent()
        self.out.append(b"]" if array else b"}")

    def key(self, name: str) -> None:
        self._prefix()
        self.out.append(orjson.dumps(name))

    def raw(self, text: bytes) -> None:
        self._prefix()
        self.out.append(text)

    def value(self, v: Any) -> None:
        if isinstance(v, dict):
            self.start(False)
            for k, x in v.items():
                self.key(k)
                self.value(x)
            self.end()
        elif isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim):
            if self.indent == 4 and _is_plain_numbers(v):
                self.raw(_single_line(v) if self.single else _expanded(v, len(self.levels)))
                return
            self.start(True)
            for x in v:
                self.value(x)
            self.end()
        elif isinstance(v, _Raw):
            self.raw(v.text().encode())
        else:
            self.raw(orjson.dumps(v, option=_OPT))


def _items(v: Any) -> list[Any]:
    return list(v) if not isinstance(v, np.ndarray) else [v[i] for i in range(v.shape[0])]


def predict_response(outputs: dict[str, np.ndarray], row: bool) -> bytes:
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    conv = {
        name: _jsonable(a, a.dtype.kind == "O" and name.endswith("_bytes"))
        for name, a in outputs.items()
    }
    if not row:
        value = next(iter(conv.values())) if len(conv) == 1 else conv
        if _is_plain_numbers(value):  # the common case, a numeric tensor
            return b'{\n    "outputs": ' + _expanded(value, 1) + b"\n}"
        w = _Pretty()
        w.value({"outputs": value})
        return w.text()
    batch = -1
    for name, a in outputs.items():
        if a.ndim == 0:
            raise invalid(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and a.shape[0] != batch:
            raise invalid(
                f"Tensor name: {name} has inconsistent batch size: {a.shape[0]} expecting: {batch}"
            )
        batch = a.shape[0]
    if len(conv) == 1:
        value = next(iter(conv.values()))
        if _is_plain_numbers(value):  # the common case: items joined by ", ", then the close
            text = _single_line(value)
            return b'{\n    "predictions": ' + (text[:-1] + b"\n    ]" if batch else text) + b"\n}"
        w = _Pretty()
        w.start(False)
        w.key("predictions")
        w.start(True)
        for item in _items(value):
            w.single = True
            w.value(item)
            w.single = False
        w.end()
        w.end()
        return w.text()
    names = sorted(conv)
    columns = {n: _items(conv[n]) for n in names}
    w = _Pretty()
    w.start(False)
    w.key("predictions")
    w.start(True)
    for i in range(batch):
        w.start(False)
        w.single = True
        for n in names:
            w.key(n)
            w.value(columns[n][i])
        w.single = False
        w.end()
    w.end()
    w.end()
    return w.text()


def classify_response(result: list[list[tuple[Any, float]]]) -> bytes:
    w = _Pretty()
    w.start(False)
    w.key("results")
    w.start(True)
    for row in result:
        w.single = True
        w.start(True)
        for lab, score in row:
            w.start(True)
            w.value(lab.decode("utf-8", "replace") if isinstance(lab, bytes) else str(lab))
            s = np.float32(score)
            w.value(_Raw(s) if not np.isfinite(s) else s)
            w.end()
        w.end()
        w.single = False
    w.end()
    w.end()
    return w.text()


def regress_response(values: np.ndarray) -> bytes:
    text = _single_line(_jsonable(values.astype(np.float32, copy=False), False))
    return b'{\n    "results": ' + text + b"\n}"


def error_body(message: str) -> bytes:
    return b'{\n    "error": ' + orjson.dumps(message) + b"\n}"


def proto_json(doc: Any) -> bytes:
    """Status and metadata as protobuf's JSON printer writes them with add_whitespace (TF
    Serving's http_rest_api_util.cc): one space per level."""
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    lines = text.split(b"\n")
    out = []
    for line in lines:
        stripped = line.lstrip(b" ")
        out.append(b" " * ((len(line) - len(stripped)) // 2) + stripped)
    return b"\n".join(out)
