"""REST JSON <-> numpy with TF Serving's rules and messages (util/json_tensor.cc)."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.server import json_tensor as jt
from orchestrator.server.status import ServingStatus

FLOAT, INT32, STRING, INT64, BOOL = 1, 3, 7, 9, 10


def err(fn, *args) -> str:
    with pytest.raises(ServingStatus) as e:
        fn(*args)
    assert e.value.code == "INVALID_ARGUMENT"
    return e.value.message


def test_loads_accepts_nan_and_infinity():
    doc = jt.loads(b'{"instances": [NaN, Infinity, -Infinity]}')
    assert np.isnan(doc["instances"][0]) and doc["instances"][1:] == [float("inf"), float("-inf")]


def test_loads_errors():
    assert err(jt.loads, b"") == "JSON Parse error: The document is empty"
    assert err(jt.loads, b"[1]") == "JSON Value: [1] Is not object"
    assert err(jt.loads, b'{"a": ').startswith("JSON Parse error:")


def test_row_format_single_input():
    out = jt.instances_to_arrays([1.0, 2.0, 5.0], {"x": FLOAT})
    assert out["x"].dtype == np.float32 and out["x"].tolist() == [1.0, 2.0, 5.0]


def test_row_format_named_inputs_and_b64():
    out = jt.instances_to_arrays(
        [{"a": 1, "s": {"b64": "aGk="}}, {"a": 2, "s": "yo"}], {"a": INT64, "s": STRING}
    )
    assert out["a"].tolist() == [1, 2]
    assert out["s"].tolist() == [b"hi", b"yo"]


def test_row_format_errors():
    assert "Expecting tensor size: 1 but got: 2" in err(
        jt.instances_to_arrays, [[1.0], [1.0, 2.0]], {"x": FLOAT}
    )
    assert "is not of expected type: int32" in err(jt.instances_to_arrays, [1.5], {"x": INT32})
    assert "is not of expected type: bool" in err(jt.instances_to_arrays, [1], {"x": BOOL})
    assert err(jt.instances_to_arrays, [1.0], {"a": FLOAT, "b": FLOAT}).startswith(
        "instances is a plain list"
    )
    assert "keys must be equal to: a,b" in err(
        jt.instances_to_arrays, [{"a": 1.0}], {"a": FLOAT, "b": FLOAT}
    )


def test_columnar():
    assert jt.inputs_to_arrays([[1, 2]], {"x": FLOAT})["x"].shape == (1, 2)
    assert (
        err(jt.inputs_to_arrays, {"a": 1.0}, {"a": FLOAT, "b": FLOAT})
        == "Missing named input: b in 'inputs' object."
    )


def test_parse_predict_keys():
    get = lambda sig: {"x": FLOAT}  # noqa: E731
    assert jt.parse_predict({"instances": [1.0]}, get)[2] is True
    assert jt.parse_predict({"inputs": [1.0]}, get)[2] is False
    assert err(jt.parse_predict, {}, get) == "Missing 'inputs' or 'instances' key"
    assert "No values in 'instances' array" in err(jt.parse_predict, {"instances": []}, get)
    assert "'signature_name' key must be a string value." in err(
        jt.parse_predict, {"signature_name": 1, "inputs": 1}, get
    )


def test_predict_response_formats():
    # rapidjson's PrettyWriter as TF Serving sets it up (json_tensor.cc), byte for byte.
    y = np.array([2.5, 3.0, 4.5], dtype=np.float32)
    assert jt.predict_response({"y": y}, True) == b'{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'
    y = np.array([[2.5], [3.0]], dtype=np.float32)
    assert jt.predict_response({"y": y}, True) == b'{\n    "predictions": [[2.5], [3.0]\n    ]\n}'
    assert jt.predict_response({"y": y}, False) == (
        b'{\n    "outputs": [\n        [\n            2.5\n        ],\n        [\n            3.0\n'
        b"        ]\n    ]\n}"
    )
    assert jt.predict_response({"y": np.zeros((0, 2), np.float32)}, True) == (
        b'{\n    "predictions": []\n}'
    )
    two = jt.predict_response(
        {"b": np.array([1, 2]), "a": np.array([0.1, 0.2], dtype=np.float32)}, True
    )
    assert two == (
        b'{\n    "predictions": [\n        {\n            "a": 0.1,\n            "b": 1\n        },'
        b'\n        {\n            "a": 0.2,\n            "b": 2\n        }\n    ]\n}'
    )
    assert "inconsistent batch size" in err(
        jt.predict_response, {"a": np.zeros(2), "b": np.zeros(3)}, True
    )


def test_non_finite_and_bytes_outputs():
    out = jt.predict_response(
        {"y": np.array([np.nan, np.inf, -np.inf, 0.5], dtype=np.float32)}, True
    )
    assert out == b'{\n    "predictions": [NaN, Infinity, -Infinity, 0.5\n    ]\n}'
    out = jt.predict_response({"img_bytes": np.array([b"\x00\x01"], dtype=object)}, False)
    assert out == b'{\n    "outputs": [\n        {\n            "b64": "AAE="\n        }\n    ]\n}'
    out = jt.predict_response({"s": np.array(["a,b", "c"], dtype=object)}, True)
    assert out == b'{\n    "predictions": ["a,b", "c"\n    ]\n}'


def test_classify_regress_error_and_status_layout():
    assert jt.classify_response([[(b"", 3.0)], [(b"x", 1.0)]]) == (
        b'{\n    "results": [[["", 3.0]], [["x", 1.0]]\n    ]\n}'
    )
    assert jt.regress_response(np.array([3.0, 4.5], np.float32)) == b'{\n    "results": [3.0, 4.5]\n}'
    assert jt.error_body("bad") == b'{\n    "error": "bad"\n}'
    assert jt.proto_json({"a": [{"b": ""}]}) == b'{\n "a": [\n  {\n   "b": ""\n  }\n ]\n}'


def test_examples_and_context():
    from tensorflow.core.example import example_pb2

    _sig, examples = jt.parse_examples(
        {"context": {"c": "x"}, "examples": [{"f": 1.5, "i": [1, 2], "b": True}]}, "classify"
    )
    ex = example_pb2.Example.FromString(examples[0])
    feats = ex.features.feature
    assert feats["c"].bytes_list.value == [b"x"]
    assert feats["f"].float_list.value == [1.5]
    assert feats["i"].int64_list.value == [1, 2]
    assert feats["b"].int64_list.value == [1]
    assert (
        err(jt.parse_examples, {"examples": [{"f": [1.0, "a"]}]}, "regress")
        == "Unexpected element type in feature: f expecting type: float"
    )
    assert (
        err(jt.parse_examples, {"examples": [[1]]}, "regress")
        == "Example must be JSON object but got JSON Array"
    )


def test_loads_numbers_too_big_for_a_double():
    too_big = "JSON Parse error: Number too big to be stored in double. at offset: "
    assert err(jt.loads, b'{"a": 1e999}') == too_big + "6"
    assert err(jt.loads, b'{"a": [NaN, -1e999]}') == too_big + "12"
    assert err(jt.loads, b'{"a": ' + b"7" * 5000 + b"}") == too_big + "6"
    assert jt.loads(b'{"a": [NaN, 18446744073709551616]}')["a"][1] == 2.0**64


def test_loads_and_arrays_refuse_deep_nesting():
    assert "nested deeper than 1024 levels" in err(
        jt.loads, b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"
    )
    deep = [[1.0]]
    for _ in range(70):
        deep = [deep]
    assert "nested 72 levels deep" in err(jt.json_to_array, deep, FLOAT)
    assert "nested 73 levels deep" in err(jt.instances_to_arrays, [deep], {"x": FLOAT})
    very_deep: list = []
    for _ in range(5000):
        very_deep = [very_deep]
    assert jt.debug_string(very_deep) == "<Array nested too deep to print>"


@pytest.mark.parametrize("inputs", [{}, {"a": 1, "b": 1}])
def test_row_format_b64_value_needs_exactly_one_input(inputs):
    """A `{"b64": ...}` instance is a value, not an object of named inputs: with zero or several
    signature inputs it is the plain-list error, never an unpacking crash (found by hypothesis)."""
    with pytest.raises(ServingStatus, match="plain list"):
        jt.instances_to_arrays([{"b64": "AA=="}], inputs)
