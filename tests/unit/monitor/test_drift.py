"""Drift without labels: bins, PSI, Jensen-Shannon, reading log windows, the false-alarm rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.monitor import MonitorError, drift
from orchestrator.monitor.exporter import render
from orchestrator.protocol.tensors import from_tensor_proto, to_tensor_proto
from orchestrator.protos import prediction_log_pb2


def test_psi_and_js_by_hand() -> None:
    e, a = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    want = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    assert drift.psi(e, a) == pytest.approx(want)
    m = (e + a) / 2
    kl = lambda p, q: float(np.sum(p * np.log2(p / q)))  # noqa: E731
    assert drift.js_distance(e, a) == pytest.approx(math.sqrt(0.5 * kl(e, m) + 0.5 * kl(a, m)))
    assert drift.psi(e, e) == 0 and drift.js_distance(e, e) == 0
    # Disjoint supports: JS distance (base 2) is at its maximum, 1 (up to the EPS floor).
    assert drift.js_distance([1, 0], [0, 1]) == pytest.approx(1, abs=1e-3)


def test_quantile_bins_are_equal_mass_and_ties_merge() -> None:
    rng = np.random.default_rng(1)
    ref = drift.reference("x", "input", rng.normal(size=10_000))
    assert ref.kind == "numeric" and len(ref.edges) == drift.BINS - 1
    assert all(p == pytest.approx(0.1, abs=0.002) for p in ref.probs)
    tied = drift.reference("t", "input", np.array([0.0] * 90 + list(range(1, 11)), dtype=float))
    assert len(tied.edges) < drift.BINS - 1 and sum(tied.probs) == pytest.approx(1)


def test_categorical_features_and_unseen_values() -> None:
    ref = drift.reference("c", "output", np.array(["a"] * 70 + ["b"] * 30, dtype=object))
    assert ref.kind == "categorical" and ref.categories == ["a", "b"]
    assert ref.probs == pytest.approx([0.7, 0.3, 0.0])
    p = drift.proportions(ref, np.array(["a", "zzz", "zzz", "b"], dtype=object))
    assert p.tolist() == [0.25, 0.25, 0.5]  # "zzz" lands in <other>
    ints = drift.reference("k", "input", np.arange(1000) % 3)
    assert ints.kind == "categorical"
    assert drift.reference("w", "input", np.arange(1000)).kind == "numeric"


def test_tensor_columns() -> None:
    cols = drift.tensor_columns("y", np.array([[0.1, 0.9], [0.8, 0.2]], np.float32), "output")
    assert set(cols) == {"y[0]", "y[1]", "y:class"} and cols["y:class"].tolist() == [1, 0]
    assert set(drift.tensor_columns("x", np.zeros((3, 1)), "input")) == {"x"}
    assert drift.tensor_columns("img", np.zeros((2, 8, 8)), "input")["img"].shape == (128,)


def test_shift_is_flagged_and_fresh_samples_stay_quiet() -> None:
    """Many windows of the same distribution: the measured false-alarm rate at PSI 0.2 is 0."""
    rng = np.random.default_rng(7)
    base = drift.build_baseline("m", "test", {"x": rng.normal(size=(20_000, 3))})
    windows, rows = 300, 500
    quiet = [max(d.psi for d in drift.drift(base, drift.columns(
        {"x": rng.normal(size=(rows, 3))}, "input"))) for _ in range(windows)]
    false_alarms = sum(q > 0.2 for q in quiet) / windows
    assert false_alarms == 0, (false_alarms, max(quiet))
    assert max(quiet) < 0.1, max(quiet)
    shifted = rng.normal(size=(rows, 3))
    shifted[:, 1] += 1.0
    result = {d.feature: d for d in drift.drift(base, drift.columns({"x": shifted}, "input"))}
    assert result["x[1]"].psi > 0.5 and result["x[1]"].js > 0.3
    assert result["x[0]"].psi < 0.1 and result["x[2]"].psi < 0.1


def test_gate_number_compares_two_windows() -> None:
    rng = np.random.default_rng(3)
    stable = {"y:class": rng.integers(0, 3, 5000)}
    same = {"y:class": rng.integers(0, 3, 5000)}
    other = {"y:class": np.zeros(5000, dtype=np.int64)}
    assert drift.max_psi(stable, same) < 0.01
    assert drift.max_psi(stable, other) > 1
    assert drift.max_psi(stable, {}) == 0


def _record(version: int, ts: int, rid: str, inputs: dict, outputs: dict) -> bytes:
    pl = prediction_log_pb2.PredictionLog()
    md = pl.log_metadata
    md.model_spec.name, md.model_spec.version.value = "m", version
    md.timestamp_secs, md.request_origin = ts, rid
    for k, v in inputs.items():
        pl.predict_log.request.inputs[k].CopyFrom(to_tensor_proto(v))
    for k, v in outputs.items():
        pl.predict_log.response.outputs[k].CopyFrom(to_tensor_proto(v))
    return pl.SerializeToString()


def _write(path, records: list[bytes], tail: bytes = b"") -> None:  # type: ignore[no-untyped-def]
    import struct

    with open(path, "wb") as fh:
        for r in records:
            fh.write(struct.pack("<Q", len(r)) + b"\0" * 4 + r + b"\0" * 4)
        fh.write(tail)  # a record still being written


def test_log_window_matches_decoding_each_record(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    recs, want_x, want_w = [], [], []
    for i in range(300):
        batch = 1 + i % 4
        x = rng.normal(size=(batch, 3)).astype(np.float32)
        w = np.array([b"a", b"b"][i % 2:i % 2 + 1] * batch, dtype=object).reshape(batch, 1)
        y = rng.random(size=(batch, 2))
        recs.append(_record(1 + i % 2, 1000 + i, f"r{i}", {"x": x, "w": w}, {"y": y}))
        if i % 2 == 0:
            want_x.append(x)
            want_w += [v.decode() for v in w.ravel()]
    _write(tmp_path / "m-1000000.tfrecord", recs[:150])
    _write(tmp_path / "m-1150000.tfrecord", recs[150:], b"\x05\0\0\0\0\0\0\0trunc")
    w1 = drift.load_window(str(tmp_path / "m"), version=1, now=2000)
    x = np.concatenate(want_x)
    assert list(w1.columns) == [1] and w1.rows == {1: len(x)}
    for i in range(3):
        assert w1.columns[1][f"x[{i}]"].tolist() == x[:, i].tolist()
    assert w1.columns[1]["w"].tolist() == want_w
    assert w1.sides["y:class"] == "output" and w1.sides["x[0]"] == "input"
    both = drift.load_window(str(tmp_path / "m"), since_s=100, now=1300)  # ts >= 1200
    assert both.first == 1200 and both.last == 1299 and set(both.columns) == {1, 2}
    decoded = [prediction_log_pb2.PredictionLog.FromString(r) for r in recs if
               prediction_log_pb2.PredictionLog.FromString(r).log_metadata.timestamp_secs >= 1200]
    ys = np.concatenate([from_tensor_proto(d.predict_log.response.outputs["y"]) for d in decoded
                         if d.log_metadata.model_spec.version.value == 2])
    assert both.columns[2]["y:class"].tolist() == ys.argmax(axis=1).tolist()
    # Split over processes (forced), the same columns.
    monkeypatch.setattr(drift, "PARALLEL_MIN_BYTES", 0)
    par = drift.load_window(str(tmp_path / "m"), workers=2)
    one = drift.load_window(str(tmp_path / "m"), workers=1)
    for v in (1, 2):
        for k in one.columns[v]:
            assert par.columns[v][k].tolist() == one.columns[v][k].tolist()


def test_baseline_round_trip_and_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = drift.build_baseline("m", "t", {"x": np.arange(100.0).reshape(50, 2)},
                                {"y": np.array([b"a", b"b"] * 25, dtype=object)})
    drift.save(tmp_path / "b.json", base)
    again = drift.load(tmp_path / "b.json", "m")
    assert again == base
    with pytest.raises(MonitorError, match="no drift baseline") as err:
        drift.load(tmp_path / "none.json", "m")
    assert "monitor baseline m" in err.value.fix
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(MonitorError, match="unreadable"):
        drift.load(tmp_path / "bad.json", "m")


def test_exporter_page_parses() -> None:
    rng = np.random.default_rng(0)
    base = drift.build_baseline("m", "t", {"x": rng.normal(size=(1000, 2))})
    window = drift.Window({3: drift.columns({"x": rng.normal(size=(200, 2)) + 2}, "input")},
                          {3: 200}, 1.0, 2.0)
    feedback = {"versions": [{"version": 3, "rows": 10, "accuracy": 0.7, "mae": None,
                              "rmse": None}]}
    page = render("m", window, base, feedback, 0.5, 1)
    families = {f.name: f for f in text_string_to_metric_families(page)}
    psi = {s.labels["feature"]: s.value for s in families["tfso_drift_psi"].samples}
    assert set(psi) == {"x[0]", "x[1]"} and min(psi.values()) > 1
    assert families["tfso_feedback_accuracy"].samples[0].value == 0.7
    assert families["tfso_feedback_accuracy"].samples[0].labels == {"model": "m", "version": "3"}
    assert families["tfso_drift_window_rows"].samples[0].value == 200
    assert "tfso_feedback_mae" not in families
    empty = {f.name for f in text_string_to_metric_families(render("m", None, None, None, 0, 0))}
    assert empty == {"tfso_quality_baseline_present", "tfso_quality_compute_seconds",
                     "tfso_quality_errors"}
