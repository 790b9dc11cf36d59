"""Accuracy from late labels: the join on request ids and the scores, against offline numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.monitor import MonitorError
from orchestrator.monitor import feedback as fb
from orchestrator.protocol.tensors import to_tensor_proto
from orchestrator.protos import prediction_log_pb2


def _rec(rid: str, version: int, ts: int, y: np.ndarray) -> prediction_log_pb2.PredictionLog:
    pl = prediction_log_pb2.PredictionLog()
    pl.log_metadata.request_origin = rid
    pl.log_metadata.model_spec.version.value = version
    pl.log_metadata.timestamp_secs = ts
    pl.predict_log.response.outputs["y"].CopyFrom(to_tensor_proto(y))
    return pl


def test_classification_scores_equal_offline() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((200, 3)).astype(np.float32)
    recs = [_rec(f"r{i}", 1 + i % 2, 3600 * (i // 100), scores[i:i + 1]) for i in range(200)]
    truth = rng.integers(0, 3, 200)
    labels = {f"r{i}": str(truth[i]) for i in range(0, 200, 2)} | {"unknown": "1"}
    kind, preds = fb.predictions(recs, None)
    result = fb.join(kind, preds, labels, 3600)
    assert kind == "classification" and result.joined == 100 and result.labels == 101
    pred = scores.argmax(axis=1)
    rows = list(range(0, 200, 2))  # all version 1
    assert [s.version for s in result.versions] == [1]
    assert result.versions[0].accuracy == np.mean(pred[rows] == truth[rows])
    for c in range(3):
        tp = np.sum((pred[rows] == c) & (truth[rows] == c))
        assert result.versions[0].precision[str(c)] == tp / np.sum(pred[rows] == c)
        assert result.versions[0].recall[str(c)] == tp / np.sum(truth[rows] == c)
    assert [(s.start, s.rows) for s in result.windows] == [(0, 50), (3600, 50)]
    assert result.windows[1].accuracy == np.mean(pred[rows[50:]] == truth[rows[50:]])


def test_batched_rows_join_by_index_and_regression() -> None:
    recs = [_rec("b", 2, 0, np.array([[1.0], [2.0], [4.0]], np.float32)),
            _rec("s", 2, 0, np.array([[10.0]], np.float32))]
    kind, preds = fb.predictions(recs, "y")
    assert kind == "regression" and set(preds) == {"b:0", "b:1", "b:2", "s:0", "s"}
    result = fb.join(kind, preds, {"b:0": "1", "b:2": "2", "s": "13"}, 60)
    err = np.array([0.0, 2.0, -3.0])
    assert result.versions[0].mae == pytest.approx(np.mean(np.abs(err)))
    assert result.versions[0].rmse == pytest.approx(np.sqrt(np.mean(err ** 2)))
    with pytest.raises(MonitorError, match="not classification"):
        fb.predictions(recs, "y", "classification")
    with pytest.raises(MonitorError, match="no output 'z'"):
        fb.predictions(recs, "z")


def test_label_file_errors(tmp_path: Path) -> None:
    good = tmp_path / "l.csv"
    good.write_text("request_id,label\nr1,cat\n\nr2, dog\n")
    assert fb.read_labels(good) == {"r1": "cat", "r2": "dog"}
    bad = tmp_path / "bad.csv"
    bad.write_text("r1,cat\nr2\n")
    with pytest.raises(MonitorError, match="line 2"):
        fb.read_labels(bad)
    with pytest.raises(MonitorError, match="does not exist"):
        fb.read_labels(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("request_id,label\n")
    with pytest.raises(MonitorError, match="no labels"):
        fb.read_labels(tmp_path / "empty.csv")
