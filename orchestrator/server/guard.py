"""Checks a gRPC request passes before the server allocates anything for it.

A TensorProto declares its shape apart from its values, and TF's rule fills missing values (the
last one repeats, or zeros when there are none), so a 20-byte request can ask for 256 GiB. The
declared size is checked against orchestrator.limits first, and against the content it carries.
"""

from __future__ import annotations

import math
from typing import Any

from orchestrator import limits
from orchestrator.protocol.tensors import enum_to_numpy_dtype
from orchestrator.protos import tensor_pb2
from orchestrator.server.status import invalid

LIMITS = limits.current()
_POINTER = 8  # an object array holds one pointer per string


def check_input_count(count: int) -> None:
    if count > LIMITS.max_inputs:
        raise invalid(
            f"Request names {count} inputs; at most {LIMITS.max_inputs} are accepted "
            "(TFS_MAX_INPUTS)"
        )


def check_tensor_proto(alias: str, proto: Any) -> None:
    """INVALID_ARGUMENT when the declared shape is unusable or too big to allocate."""
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise invalid(f"Input {alias}: a tensor with values cannot have unknown rank")
    dims = [d.size for d in shape.dim]
    if len(dims) > LIMITS.max_tensor_rank:
        raise invalid(
            f"Input {alias}: rank {len(dims)} is above the limit of {LIMITS.max_tensor_rank} "
            "(TFS_MAX_TENSOR_RANK)"
        )
    if any(d < 0 for d in dims):
        raise invalid(f"Input {alias}: tensor shape {dims} has a negative dimension")
    try:
        dtype = enum_to_numpy_dtype(proto.dtype)
    except (ValueError, KeyError, TypeError) as e:
        raise invalid(f"Input {alias}: {e}") from None
    count = math.prod(dims)
    itemsize = _POINTER if proto.dtype == tensor_pb2.DT_STRING else dtype.itemsize
    nbytes = count * itemsize
    if nbytes > LIMITS.max_tensor_bytes:
        raise invalid(
            f"Input {alias}: shape {dims} of {tensor_pb2.DataType.Name(proto.dtype)} declares "
            f"{nbytes} bytes, above the limit of {LIMITS.max_tensor_bytes} bytes "
            "(TFS_MAX_TENSOR_BYTES)"
        )
