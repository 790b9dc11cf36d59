"""Output gates (`--max-drift`): the analysis check, the manager with an output source, and
`LoggedOutputs` over real PredictionLog TFRecord files (TF's writer) with both versions mixed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.errors import RolloutError
from orchestrator.monitor.gates import LoggedOutputs, require_logging
from orchestrator.protocol.tensors import to_tensor_proto
from orchestrator.protos import prediction_log_pb2
from orchestrator.rollout.analysis import Outputs, Verdict, Window, analyse
from orchestrator.rollout.machine import Phase, Thresholds
from orchestrator.rollout.manager import RolloutManager, RolloutStore
from orchestrator.state import StateStore
from tests.unit.rollout.test_manager import Clock, FakeTarget, status_for

GOOD = Window(100, 0)


def check(outputs: Outputs | None, **kw):  # type: ignore[no-untyped-def]
    return analyse(GOOD, GOOD, max_error_rate=0.01, max_latency_p99_ms=None, min_requests=10, outputs=outputs,
                   min_rows=50, **kw)


def test_drift_over_the_limit_fails_like_errors() -> None:
    bad = check(Outputs(200, 300, psi=1.7, feature="y"), max_drift=0.2)
    assert bad.verdict is Verdict.FAIL and "output drift PSI 1.700 > 0.2 (y)" in bad.reason
    assert bad.drift_psi == 1.7
    good = check(Outputs(200, 300, psi=0.03), max_drift=0.2)
    assert good.verdict is Verdict.PASS and "output PSI 0.030 over 200/300 rows" in good.reason


def test_too_few_logged_rows_is_no_data_and_no_source_is_no_data() -> None:
    assert check(Outputs(20, 300, psi=5.0), max_drift=0.2).verdict is Verdict.NO_DATA
    assert check(None, max_drift=0.2).verdict is Verdict.NO_DATA
    assert check(None).verdict is Verdict.PASS  # no gate asked: outputs are not needed


def test_agreement_below_the_minimum_fails() -> None:
    bad = check(Outputs(200, 200, agreement=0.9, max_abs_diff=1.0), min_agreement=0.99)
    assert bad.verdict is Verdict.FAIL and "agreement 90.00% < 99.00%, max abs diff 1" in bad.reason
    assert check(Outputs(200, 200, agreement=1.0), min_agreement=0.99).verdict is Verdict.PASS


def test_thresholds_refuse_bad_gate_values() -> None:
    with pytest.raises(RolloutError, match="--max-drift"):
        Thresholds(max_drift=0)
    with pytest.raises(RolloutError, match="--min-agreement"):
        Thresholds(min_agreement=1.5)


class FixedOutputs:
    def __init__(self, psi: float) -> None:
        self.psi = psi
        self.since: list[float] = []

    def compare(self, since_ts: float) -> Outputs:
        self.since.append(since_ts)
        return Outputs(500, 500, psi=self.psi, feature="y")


@pytest.mark.parametrize(("psi", "phase"), [(0.9, Phase.FAILED), (0.01, Phase.SUCCEEDED)])
def test_manager_rolls_back_a_drifting_canary(tmp_path: Path, psi: float, phase: Phase) -> None:
    target, clock, source = FakeTarget(), Clock(), FixedOutputs(psi)
    m = RolloutManager(target, RolloutStore(StateStore(tmp_path)), clock=clock, sleep=clock.sleep,
                       outputs=source)
    final = m.run(status_for(thresholds=Thresholds(min_requests=10, threshold=2, max_drift=0.2)))
    assert final.phase is phase
    if phase is Phase.FAILED:
        assert "output drift PSI 0.900 > 0.2 (y)" in final.message
        assert [h.drift_psi for h in final.history if h.decision in ("check failed", "roll back")] == [0.9, 0.9]
        assert ("promote", 2) not in target.calls
    # Each window starts where the step (or the last failed check) began, never before the canary.
    assert source.since and all(s >= 1000.0 for s in source.since)


def _record(version: int, ts: int, y: np.ndarray) -> bytes:
    pl = prediction_log_pb2.PredictionLog()
    pl.log_metadata.model_spec.name, pl.log_metadata.model_spec.version.value = "m", version
    pl.log_metadata.timestamp_secs = ts
    pl.predict_log.request.inputs["x"].CopyFrom(to_tensor_proto(y.astype(np.float32)))
    pl.predict_log.response.outputs["y"].CopyFrom(to_tensor_proto(y.astype(np.float32)))
    return pl.SerializeToString()


def test_logged_outputs_compare_canary_with_stable_over_the_window(tmp_path: Path) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    now = 10_000
    with tf.io.TFRecordWriter(str(tmp_path / f"m-{(now - 100) * 1000:013d}.tfrecord")) as w:
        for _ in range(300):  # an old canary far off, before the window: must not count
            w.write(_record(2, now - 100, rng.normal(50, 1, (1, 1))))
    with tf.io.TFRecordWriter(str(tmp_path / f"m-{(now - 10) * 1000:013d}.tfrecord")) as w:
        for i in range(400):
            w.write(_record(1, now - 5, rng.normal(0, 1, (1, 1))))
            if i % 2:
                w.write(_record(2, now - 5, rng.normal(0, 1, (1, 1))))
    same = LoggedOutputs(str(tmp_path / "m"), 1, 2, clock=lambda: now).compare(now - 20)
    assert same is not None and (same.canary_rows, same.stable_rows) == (200, 400)
    assert same.psi is not None and same.psi < 0.2
    with tf.io.TFRecordWriter(str(tmp_path / f"m-{(now - 1) * 1000:013d}.tfrecord")) as w:
        for _ in range(400):
            w.write(_record(3, now, rng.normal(1, 1, (1, 1))))  # answers differently
    shifted = LoggedOutputs(str(tmp_path / "m"), 1, 3, clock=lambda: now).compare(now - 20)
    assert shifted is not None and shifted.psi is not None and shifted.psi > 0.5 and shifted.feature == "y"
    # At weight 100 stable answers nobody: its reference is then its answers since the rollout began.
    alone = LoggedOutputs(str(tmp_path / "m"), 1, 3, clock=lambda: now).compare(now - 1)
    assert alone is not None and (alone.canary_rows, alone.stable_rows, alone.psi) == (400, 0, None)
    topped = LoggedOutputs(str(tmp_path / "m"), 1, 3, started_at=now - 20, min_rows=100,
                           clock=lambda: now).compare(now - 1)
    assert topped is not None and (topped.canary_rows, topped.stable_rows) == (400, 400)
    assert topped.psi is not None and topped.psi > 0.5
    empty = LoggedOutputs(str(tmp_path / "m"), 1, 9, clock=lambda: now).compare(now - 20)
    assert empty is not None and empty.canary_rows == 0 and empty.psi is None


def test_a_gate_without_logging_is_refused_with_the_fix() -> None:
    class Spec:
        logging = None
        name = "m"
        source = "serving_configs/m.yaml"

    with pytest.raises(RolloutError) as info:
        require_logging(Spec(), "--max-drift")
    assert "m logs no predictions" in info.value.message
    assert "logging: {sample" in (info.value.fix or "") and "serving_configs/m.yaml" in (info.value.fix or "")


def test_row_agreement_top1_for_classifiers_abs_diff_for_regressors() -> None:
    from orchestrator.monitor.shadow import row_agreement

    scores = np.array([[0.1, 0.9], [0.6, 0.4], [0.5, 0.5]])
    other = np.array([[0.2, 0.8], [0.3, 0.7], [0.5, 0.5]])
    agree, worst = row_agreement({"p": scores}, {"p": other}, 1e-3)
    assert agree.tolist() == [True, False, True] and worst == pytest.approx(0.3)
    agree, worst = row_agreement({"y": np.array([[1.0], [2.0]])}, {"y": np.array([[1.0005], [2.5]])}, 1e-3)
    assert agree.tolist() == [True, False] and worst == pytest.approx(0.5)
    agree, _ = row_agreement({"c": np.array([b"a", b"b"])}, {"c": np.array([b"a", b"c"])}, 0.0)
    assert agree.tolist() == [True, False]
    agree, worst = row_agreement({"y": np.zeros((2, 1))}, {"z": np.zeros((2, 1))}, 1e-3)
    assert agree.tolist() == [False, False] and worst == float("inf")


def test_shadow_is_refused_off_the_local_runtime() -> None:
    from orchestrator.monitor.shadow import refuse_unless_local

    refuse_unless_local("local")
    with pytest.raises(RolloutError) as info:
        refuse_unless_local("docker")
    assert "--mode shadow is not available on the docker runtime" in info.value.message
    with pytest.raises(RolloutError, match="--max-drift is not available on the kubernetes"):
        refuse_unless_local("kubernetes", "--max-drift")
    assert "--runtime local" in (info.value.fix or "")
    refuse_unless_local("docker", "--max-drift")  # the router captures the logs under docker


def test_shadow_log_records_are_tfrecords_tf_reads(tmp_path: Path) -> None:
    import tensorflow as tf

    from orchestrator.monitor.shadow import tfrecord

    path = tmp_path / "x.tfrecord"
    path.write_bytes(tfrecord(b"hello") + tfrecord(b"") + tfrecord(bytes(range(256)) * 3))
    # TF's reader checks both CRCs of every record.
    got = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    assert got == [b"hello", b"", bytes(range(256)) * 3]
