"""Property-based: any body gives the JSON tensor parser a value or a ServingStatus, in bounds."""

from __future__ import annotations

import base64
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.server import json_tensor as jt
from orchestrator.server.status import ServingStatus
from tests.helpers.bounded import bounded

DTYPES = [1, 2, 3, 4, 5, 6, 7, 9, 10, 19, 22, 23]  # float ... uint64, as signatures declare
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -0.0, 2**63, 2**64, -(2**63) - 1, 1e308, 5e-324]),
)
b64 = st.binary(max_size=20).map(lambda b: {"b64": base64.b64encode(b).decode()})
leaves = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=8), b64)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=40,
)
# Dense tensors too, so the happy paths are explored as much as the broken ones.
dense = st.integers(1, 3).flatmap(
    lambda n: st.lists(st.lists(numbers, min_size=n, max_size=n), min_size=1, max_size=4)
)
names = st.sampled_from(["x", "y", "features"])


def dumps(doc: object) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def parse(body: bytes, inputs: dict[str, int]) -> object:
    def run() -> object:
        doc = jt.loads(body)
        return jt.parse_predict(doc, lambda _sig: inputs)

    result = bounded(run, allowed=(ServingStatus,))
    if not isinstance(result, ServingStatus):
        _, arrays, _ = result
        assert all(isinstance(a, np.ndarray) for a in arrays.values())
    return result


@SETTINGS
@given(
    body=st.one_of(
        st.binary(max_size=200),
        values.map(dumps),
        st.builds(lambda v: dumps({"instances": v}), values),
        st.builds(lambda v: dumps({"inputs": v}), values),
        st.builds(lambda v, n: dumps({"instances": [{n: v}]}), values, names),
        st.builds(lambda v, n: dumps({"inputs": {n: v}}), values, names),
        st.builds(lambda v: dumps({"instances": v}), dense),
        st.builds(lambda v: dumps({"inputs": v}), dense),
    ),
    inputs=st.dictionaries(names, st.sampled_from(DTYPES), min_size=1, max_size=2),
)
def test_predict_bodies(body, inputs):
    parse(body, inputs)


@SETTINGS
@given(
    body=values.map(dumps),
    cut=st.integers(0, 50),
    junk=st.binary(max_size=5),
)
def test_mangled_bodies(body, cut, junk):
    parse(body[: max(len(body) - cut, 0)] + junk, {"x": 1})


@SETTINGS
@given(depth=st.integers(1, 3000), opener=st.sampled_from(["[", '{"a":']))
def test_any_nesting_depth(depth, opener):
    closer = "]" if opener == "[" else "}"
    body = '{"inputs":' + opener * depth + "1" + closer * depth + "}"
    parse(body.encode(), {"x": 1})


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(digits=st.integers(1, 6000), exponent=st.integers(-2000, 2000))
def test_any_number_size(digits, exponent):
    parse(f'{{"inputs":[1{"0" * digits}e{exponent}]}}'.encode(), {"x": 1})
    parse(f'{{"instances":[NaN, {"9" * digits}]}}'.encode(), {"x": 9})


@SETTINGS
@given(
    examples=st.lists(st.dictionaries(st.text(max_size=4), values, max_size=3), max_size=3),
    context=st.one_of(st.none(), st.dictionaries(st.text(max_size=4), values, max_size=2)),
)
def test_classify_bodies(examples, context):
    # tf.Example comes from TensorFlow: imported here, once, outside the bounds
    from tensorflow.core.example import example_pb2  # noqa: F401

    doc: dict = {"examples": examples}
    if context is not None:
        doc["context"] = context
    bounded(lambda: jt.parse_examples(jt.loads(dumps(doc)), "classify"), allowed=(ServingStatus,))
