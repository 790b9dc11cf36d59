"""REST API conformance: TF Serving's documented answers on models the tests export."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest
import requests

from tests.integration.server.conftest import MAX_BODY

pytestmark = pytest.mark.integration


def post(server, path: str, body, **kw) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(server.rest_url + path, data=data, timeout=30, **kw)


def get(server, path: str) -> requests.Response:
    return requests.get(server.rest_url + path, timeout=30)


HPT = "/v1/models/half_plus_two"


# -- status and metadata -----------------------------------------------------------------------
def test_status_lists_versions_newest_first(server):
    r = get(server, HPT)
    assert r.status_code == 200
    assert r.json() == {
        "model_version_status": [
            {
                "version": "2",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            },
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            },
        ]
    }


def test_status_of_one_version_and_label(server):
    assert [
        v["version"] for v in get(server, HPT + "/versions/1").json()["model_version_status"]
    ] == ["1"]
    assert [
        v["version"] for v in get(server, HPT + "/labels/canary").json()["model_version_status"]
    ] == ["2"]


def test_status_unknown_model_and_version(server):
    r = get(server, "/v1/models/nope")
    assert r.status_code == 404
    assert r.json() == {"error": "Could not find any versions of model nope"}
    r = get(server, HPT + "/versions/7")
    assert r.status_code == 404
    assert r.json() == {"error": "Could not find version 7 of model half_plus_two"}


def test_metadata_matches_tf_serving_shape(server):
    doc = get(server, HPT + "/versions/1/metadata").json()
    assert doc["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "1"}
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    x = sigs["serving_default"]["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT"
    assert x["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}],
        "unknown_rank": False,
    }
    assert sigs["classify_x_to_y"]["inputs"]["inputs"]["dtype"] == "DT_STRING"
    assert "tensorflow/serving/regress" in sigs


def test_paths_are_case_insensitive(server):
    r = post(server, "/V1/Models/half_plus_two/Versions/1:PREDICT", {"instances": [1.0]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [2.5]}


def test_malformed_path_and_missing_model_name(server):
    r = get(server, "/v1/nothing/here")
    assert r.status_code == 400
    assert r.json() == {"error": "Malformed request: GET /v1/nothing/here"}
    r = get(server, "/v1/models")
    assert r.json() == {"error": "Missing model name in request."}


# -- predict -----------------------------------------------------------------------------------------
def test_documented_half_plus_two_example(server):
    # TF Serving feeds the graph without checking the declared [-1, 1] shape.
    r = post(server, HPT + "/versions/1:predict", {"instances": [1.0, 2.0, 5.0]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}


def test_latest_version_by_default_and_labels(server):
    assert post(server, HPT + ":predict", {"instances": [[1.0]]}).json() == {"predictions": [[3.5]]}
    assert post(server, HPT + "/labels/stable:predict", {"instances": [[1.0]]}).json() == {
        "predictions": [[2.5]]
    }
    assert post(server, HPT + "/labels/canary:predict", {"instances": [[1.0]]}).json() == {
        "predictions": [[3.5]]
    }


def test_columnar_format(server):
    r = post(server, HPT + "/versions/1:predict", {"inputs": {"x": [[1.0], [2.0]]}})
    assert r.json() == {"outputs": [[2.5], [3.0]]}
    r = post(server, HPT + "/versions/1:predict", {"inputs": [[1.0], [2.0]]})
    assert r.json() == {"outputs": [[2.5], [3.0]]}


def test_both_formats_at_once_is_an_error(server):
    r = post(server, HPT + ":predict", {"instances": [1.0], "inputs": [1.0]})
    assert r.status_code == 400
    assert "expecting only one of 'inputs' or 'instances' keys to exist" in r.json()["error"]


def test_nan_and_infinity_round_trip(server):
    r = post(server, HPT + "/versions/1:predict", b'{"instances": [NaN, Infinity, -Infinity]}')
    assert r.status_code == 200, r.text
    assert r.text == '{\n    "predictions": [NaN, Infinity, -Infinity\n    ]\n}'
    values = json.loads(r.text)["predictions"]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf


def test_b64_inputs_and_bytes_outputs(server):
    raw = b"\x00\xffhi"
    r = post(
        server,
        "/v1/models/strings:predict",
        {"instances": [{"b64": base64.b64encode(raw).decode()}, "abc"]},
    )
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert preds[0]["echo_bytes"] == {"b64": base64.b64encode(raw).decode()}
    assert preds[0]["length"] == 4
    assert preds[1] == {
        "echo_bytes": {"b64": base64.b64encode(b"abc").decode()},
        "length": 3,
        "upper": "ABC",
    }


def test_keras_export_predicts(server):
    r = post(server, "/v1/models/mlp:predict", {"instances": [[0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]]})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2 and all(len(p) == 3 for p in preds)
    assert all(abs(sum(p) - 1.0) < 1e-5 for p in preds)  # softmax rows


def test_keras_named_instances(server):
    r = post(server, "/v1/models/mlp:predict", {"instances": [{"features": [0.1, 0.2, 0.3, 0.4]}]})
    assert r.status_code == 200, r.text


# -- classify / regress -------------------------------------------------------------------------------
def test_classify_scores_only(server):
    r = post(
        server,
        HPT + "/versions/1:classify",
        {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [[["", 2.5]], [["", 3.0]]]}


def test_classify_classes_and_scores(server):
    r = post(
        server,
        HPT + "/versions/1:classify",
        {"signature_name": "classify_x_to_classes", "examples": [{"x": 2.0}]},
    )
    assert r.status_code == 200, r.text
    [[low, high]] = r.json()["results"]
    assert low[0] == "low" and high[0] == "high"
    assert high[1] == pytest.approx(0.3) and low[1] == pytest.approx(0.7)


def test_regress_with_method_named_signature_key_and_context(server):
    body = {
        "signature_name": "tensorflow/serving/regress",
        "context": {"x": 4.0},
        "examples": [{}, {"x": 2.0}],
    }
    r = post(server, HPT + "/versions/1:regress", body)
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [4.0, 3.0]}  # context fills example 0; example 1's own x wins


def test_classify_errors(server):
    r = post(server, HPT + ":classify", {"signature_name": "nope", "examples": [{"x": 1.0}]})
    assert (r.status_code, r.json()) == (
        400,
        {"error": "No signature was found with the name: nope"},
    )
    r = post(server, HPT + ":regress", {"signature_name": "regress_x_to_y"})
    assert r.status_code == 400
    assert "key 'examples' is expected and was not found" in r.json()["error"]
    r = post(
        server,
        HPT + ":regress",
        {"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, "a"]}]},
    )
    assert r.json() == {"error": "Unexpected element type in feature: x expecting type: float"}


# -- errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "code", "message"),
    [
        ("/v1/models/nope:predict", 404, "Servable not found for request: Latest(nope)"),
        (
            HPT + "/versions/9:predict",
            404,
            "Servable not found for request: Specific(half_plus_two, 9)",
        ),
        (HPT + "/labels/nope:predict", 400, "Unrecognized servable version label: nope"),
    ],
)
def test_unknown_model_version_label(server, path, code, message):
    r = post(server, path, {"instances": [1.0]})
    assert (r.status_code, r.json()) == (code, {"error": message})


def test_unknown_signature(server):
    r = post(server, HPT + ":predict", {"signature_name": "nope", "instances": [1.0]})
    assert (r.status_code, r.json()) == (400, {"error": 'Serving signature key "nope" not found.'})


def test_malformed_json(server):
    r = post(server, HPT + ":predict", b'{"instances": [1.0,')
    assert r.status_code == 400
    assert r.json()["error"].startswith("JSON Parse error:")
    r = post(server, HPT + ":predict", b"")
    assert r.json() == {"error": "JSON Parse error: The document is empty"}
    r = post(server, HPT + ":predict", b"[1, 2]")
    assert r.json() == {"error": "JSON Value: [1,2] Is not object"}


def test_wrong_dtype(server):
    r = post(server, HPT + ":predict", {"instances": ["a"]})
    assert r.status_code == 400
    assert r.json()["error"] == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "a" Type: String is not of expected type: float'
    )


def test_wrong_shape(server):
    r = post(server, HPT + ":predict", {"instances": [[1.0], [2.0, 3.0]]})
    assert r.status_code == 400
    assert "Expecting tensor size: 1 but got: 2" in r.json()["error"]
    # A shape the graph itself rejects: the MLP's matmul wants 4 features.
    r = post(server, "/v1/models/mlp:predict", {"instances": [[1.0, 2.0]]})
    assert r.status_code == 400
    assert "error" in r.json()


def test_missing_and_extra_inputs(server):
    r = post(server, "/v1/models/mlp:predict", {"inputs": {"other": [[1.0, 2.0, 3.0, 4.0]]}})
    assert (r.status_code, r.json()) == (
        400,
        {"error": "Missing named input: features in 'inputs' object."},
    )
    r = post(server, "/v1/models/mlp:predict", {"instances": [{"features": [1, 2, 3, 4], "x": 1}]})
    assert r.status_code == 400
    assert "does not have named input: x" in r.json()["error"]


def test_body_over_the_limit(server):
    body = b'{"instances": [' + b"1.0," * (MAX_BODY // 4) + b"1.0]}"
    r = post(server, HPT + ":predict", body)
    assert r.status_code == 413
    assert "exceeds the limit" in r.json()["error"]
    # and the server still answers afterwards
    assert post(server, HPT + "/versions/1:predict", {"instances": [1.0]}).json() == {
        "predictions": [2.5]
    }


# -- metrics ---------------------------------------------------------------------------------------------
def test_prometheus_metrics(server):
    post(server, HPT + "/versions/1:predict", {"instances": [1.0]})
    post(server, "/v1/models/nope:predict", {"instances": [1.0]})
    r = get(server, "/monitoring/prometheus/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="half_plus_two",status="OK"}' in text
    assert ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"} ' in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert (
        ':tensorflow:serving:request_latency_bucket{model_name="half_plus_two",API="predict",entrypoint="REST",le="10"}'
        in text
    )
    assert (
        ':tensorflow:serving:request_latency_count{model_name="half_plus_two",API="predict",entrypoint="REST"}'
        in text
    )
    assert 'le="+Inf"' in text


def test_the_server_process_does_not_load_matplotlib(server):
    """Keras imports matplotlib.pyplot when it can; the server refuses it (see main._NoPlotting),
    which trims a fifth of TensorFlow's import from every start, and still serves a Keras model."""
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "/matplotlib/" not in maps
    assert "/keras/" in maps or "/tensorflow/" in maps  # the maps are the server's, TF loaded
    r = requests.post(
        f"{server.rest_url}/v1/models/mlp:predict", json={"instances": [[0.0] * 4]}, timeout=30
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"][0]) == 3
