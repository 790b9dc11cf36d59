"""Our tensors and TensorFlow's read each other (slow import: TensorFlow itself)."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.protocol.tensors import TensorProto, from_tensor_proto, to_tensor_proto
from tests.helpers.requires import require_module

from .test_tensors import NUMERIC, sample

require_module("tensorflow")
import tensorflow as tf  # noqa: E402


@pytest.mark.parametrize(("dtype", "enum"), [*NUMERIC, (object, 7)], ids=lambda v: str(v))
def test_tf_reads_ours_and_we_read_tf(dtype, enum) -> None:
    arr = sample(dtype) if dtype is not object else np.array([[b"a", b"bc\x00"]], dtype=object)
    ours = to_tensor_proto(arr).SerializeToString()
    theirs_proto = tf.make_tensor_proto(arr)
    assert theirs_proto.dtype == enum
    np.testing.assert_array_equal(tf.make_ndarray(type(theirs_proto).FromString(ours)), arr)
    back = from_tensor_proto(TensorProto.FromString(theirs_proto.SerializeToString()))
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize(
    "value",
    [1.5, [1, 2, 3], [[True, False]], np.float16(2.5), "text", [1.0] * 4],
    ids=["float", "ints", "bools", "half", "str", "list"],
)
def test_typed_field_forms_tf_writes(value) -> None:
    proto = tf.make_tensor_proto(value)
    ours = from_tensor_proto(TensorProto.FromString(proto.SerializeToString()))
    np.testing.assert_array_equal(ours, tf.make_ndarray(proto))
    assert ours.dtype == tf.make_ndarray(proto).dtype


def test_broadcast_form_tf_writes() -> None:
    proto = tf.make_tensor_proto(7.0, shape=[2, 3])  # one float_val, shape [2, 3]
    assert len(proto.float_val) == 1
    ours = from_tensor_proto(TensorProto.FromString(proto.SerializeToString()))
    np.testing.assert_array_equal(ours, np.full((2, 3), 7.0, np.float32))
