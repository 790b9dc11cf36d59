"""Classify and Regress calls are payload-logged too: upstream ClassifyLog / RegressLog records.

A real server (half_plus_two, whose classify and regress signatures take tf.Examples) with
`logging: {sample: 1.0}`; the records parse with TF's TFRecord reader and the upstream
PredictionLog proto, and our readers (logs, drift, feedback) understand them.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from orchestrator.monitor import drift
from orchestrator.monitor import feedback as fb
from orchestrator.monitor.payload import read_logs, record_dict
from orchestrator.plan import model_config, models_config_text
from orchestrator.spec import Spec
from tests.helpers.server import ServerProcess, export_half_plus_two_tf1, wait_until

pytestmark = pytest.mark.integration


def test_classify_and_regress_are_logged(tmp_path: Path) -> None:
    base = export_half_plus_two_tf1(tmp_path / "m", versions=(1,))
    logs = tmp_path / "logs"
    spec = Spec.model_validate({"name": "ex", "base_path": base,
                                "logging": {"sample": 1.0, "path": str(logs), "max_mb": 8}})
    (tmp_path / "models.config").write_text(models_config_text([model_config(spec)]))
    url = "/v1/models/ex/versions/1"
    with ServerProcess([f"--model_config_file={tmp_path / 'models.config'}"]) as srv:
        srv.wait_until_available("ex")
        with requests.Session() as s:
            r = s.post(srv.rest_url + url + ":classify", headers={"X-Request-Id": "c1"},
                       json={"signature_name": "classify_x_to_classes",
                             "examples": [{"x": 2.0}, {"x": 4.0}]}, timeout=30)
            assert r.ok, r.text
            for i, x in enumerate((1.0, 3.0, 6.0)):
                r = s.post(srv.rest_url + url + ":regress", headers={"X-Request-Id": f"r{i}"},
                           json={"signature_name": "regress_x_to_y", "examples": [{"x": x}]},
                           timeout=30)
                assert r.ok and r.json() == {"results": [0.5 * x + 2]}, r.text

        def on_disk() -> list | None:
            recs = [prediction_log_pb2.PredictionLog.FromString(raw.numpy())
                    for f in sorted(glob.glob(f"{logs}/ex-*.tfrecord"))
                    for raw in tf.data.TFRecordDataset(f)]
            return recs if len(recs) == 4 else None

        recs = wait_until(on_disk, timeout_s=30, what="4 records on disk")
    c = recs[0]
    assert c.WhichOneof("log_type") == "classify_log"
    assert c.log_metadata.request_origin == "c1"
    assert c.log_metadata.model_spec.signature_name == "classify_x_to_classes"
    examples = c.classify_log.request.input.example_list.examples
    assert [e.features.feature["x"].float_list.value[0] for e in examples] == [2.0, 4.0]
    first = c.classify_log.response.result.classifications[0].classes
    assert [k.label for k in first] == ["low", "high"]
    assert [k.score for k in first] == pytest.approx([0.7, 0.3])
    for i, (rec, x) in enumerate(zip(recs[1:], (1.0, 3.0, 6.0), strict=True)):
        assert rec.WhichOneof("log_type") == "regress_log"
        assert rec.log_metadata.request_origin == f"r{i}"
        assert rec.regress_log.request.input.example_list.examples[0].features.feature[
            "x"].float_list.value[0] == x
        assert rec.regress_log.response.result.regressions[0].value == 0.5 * x + 2

    # Our TF-free readers.
    rows = [record_dict(r) for r in read_logs(str(logs / "ex"))]
    assert rows[0]["kind"] == "classify_log" and rows[0]["inputs"] == {"x": [[2.0], [4.0]]}
    assert rows[0]["outputs"]["classes"] == ["low", "low"]
    assert rows[1]["outputs"] == {"value": [2.5]}
    window = drift.load_window(str(logs / "ex"))
    assert window.columns[1]["x"].tolist() == [2.0, 4.0, 1.0, 3.0, 6.0]
    assert window.columns[1]["value"].tolist() == [2.5, 3.5, 5.0]
    assert window.columns[1]["classes"].tolist() == ["low", "low"]
    assert window.sides["value"] == "output" and window.sides["x"] == "input"
    _, preds = fb.predictions(read_logs(str(logs / "ex")), None)
    assert preds["c1:0"].value == "low" and preds["r2"].value == 5.0
    result = fb.join("regression", {k: v for k, v in preds.items() if k.startswith("r")},
                     {"r0": "2.0", "r1": "4.0", "r2": "5.0"}, 3600)
    err = np.array([0.5, -0.5, 0.0])
    assert result.versions[0].mae == pytest.approx(np.mean(np.abs(err)))
    assert result.versions[0].rmse == pytest.approx(np.sqrt(np.mean(err ** 2)))


def test_multi_inference_is_logged(tmp_path: Path) -> None:
    """gRPC MultiInference: one multi_inference_log record with every task and its result."""
    import grpc

    from orchestrator.protos import apis_pb2

    base = export_half_plus_two_tf1(tmp_path / "m", versions=(1,))
    logs = tmp_path / "logs"
    spec = Spec.model_validate({"name": "mi", "base_path": base,
                                "logging": {"sample": 1.0, "path": str(logs), "max_mb": 8}})
    (tmp_path / "models.config").write_text(models_config_text([model_config(spec)]))
    req = apis_pb2.MultiInferenceRequest()
    for sig, method in (("classify_x_to_classes", "tensorflow/serving/classify"),
                        ("regress_x_to_y", "tensorflow/serving/regress")):
        task = req.tasks.add(method_name=method)
        task.model_spec.name = "mi"
        task.model_spec.signature_name = sig
    for x in (2.0, 4.0):
        req.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    with ServerProcess([f"--model_config_file={tmp_path / 'models.config'}"]) as srv:
        srv.wait_until_available("mi")
        with grpc.insecure_channel(srv.grpc_target) as channel:
            raw = channel.unary_unary("/tensorflow.serving.PredictionService/MultiInference")(
                req.SerializeToString(), timeout=30, metadata=[("x-request-id", "multi-1")])
        answer = apis_pb2.MultiInferenceResponse.FromString(raw)

        def on_disk() -> list | None:
            recs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
                    for f in sorted(glob.glob(f"{logs}/mi-*.tfrecord"))
                    for r in tf.data.TFRecordDataset(f)]
            return recs or None

        (rec,) = wait_until(on_disk, timeout_s=30, what="the record on disk")
    assert rec.WhichOneof("log_type") == "multi_inference_log"
    md = rec.log_metadata
    assert (md.request_origin, md.model_spec.name, md.model_spec.version.value) == ("multi-1", "mi", 1)
    assert md.model_spec.signature_name == "classify_x_to_classes,regress_x_to_y"
    logged = rec.multi_inference_log
    assert [(t.model_spec.signature_name, t.method_name) for t in logged.request.tasks] == [
        ("classify_x_to_classes", "tensorflow/serving/classify"),
        ("regress_x_to_y", "tensorflow/serving/regress")]
    assert [e.features.feature["x"].float_list.value[0]
            for e in logged.request.input.example_list.examples] == [2.0, 4.0]
    # The logged response is the one the client got (our copy of the message, same bytes).
    assert apis_pb2.MultiInferenceResponse.FromString(logged.response.SerializeToString()) == answer
    row = record_dict(next(iter(read_logs(str(logs / "mi")))))
    assert row["kind"] == "multi_inference_log" and row["inputs"] == {"x": [[2.0], [4.0]]}
    assert row["outputs"]["regress_x_to_y/value"] == [3.0, 4.0]
    assert row["outputs"]["classify_x_to_classes/classes"] == ["low", "low"]
