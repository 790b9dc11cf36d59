"""Output gates on the local runtime: real server processes logging real PredictionLog records,
real HAProxy, constant REST + gRPC load with varied inputs.

Versions: 1 = y = 0.5x + 2 (stable), 2 = the same function exported again (a same-output
canary), 3 = y = 0.5x + 3 (answers as quickly, and without errors, but differently). The load
knows which kind of answer it got from y - 0.5x.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from orchestrator.runtime.base import free_port
from tests.helpers.requires import require_haproxy
from tests.helpers.rollout import Load, rollout_status, tfsctl, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, scope="module")
def _needs_haproxy() -> None:
    require_haproxy()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.models import half_plus_two_tf1

    root = tmp_path_factory.mktemp("gates")
    base = root / "models" / "gates"
    half_plus_two_tf1(base / "1")
    half_plus_two_tf1(base / "2")
    half_plus_two_tf1(base / "3", b=3.0)
    (root / "serving_configs").mkdir()
    return root


@dataclass
class VariedLoad(Load):
    """REST and gRPC predictions of x ~ U(0, 10) through the router: (time, b, error) each
    (Load's threads, two REST and one gRPC, with other requests and records)."""

    model: str = "gates"
    records: list[tuple[float, float | None, str]] = field(default_factory=list)  # type: ignore[assignment]

    def _rest(self) -> None:
        rng = random.Random()
        with requests.Session() as session:
            while not self._stop.is_set():
                x, t = rng.uniform(0, 10), time.time()
                try:
                    r = session.post(f"{self.rest_url}/v1/models/{self.model}:predict",
                                     json={"instances": [[x]]}, timeout=10)
                    if r.status_code == 200:
                        self.records.append((t, round(r.json()["predictions"][0][0] - 0.5 * x, 3), ""))
                    else:
                        self.records.append((t, None, f"{r.status_code} {r.text[:200]}"))
                except requests.RequestException as exc:
                    self.records.append((t, None, f"{type(exc).__name__}: {exc}"))

    def _grpc(self) -> None:
        from orchestrator.client import GrpcClient
        from orchestrator.client.errors import ClientServingError

        rng = random.Random()
        with GrpcClient(self.grpc_address) as client:
            while not self._stop.is_set():
                x, t = rng.uniform(0, 10), time.time()
                try:
                    out = client.predict(self.model, {"x": [[x]]}, timeout_s=10)
                    self.records.append((t, round(float(out["y"][0][0]) - 0.5 * x, 3), ""))
                except ClientServingError as exc:
                    self.records.append((t, None, str(exc)[:300]))

    def failures(self) -> list[tuple[float, float | None, str]]:  # type: ignore[override]
        return [r for r in self.records if r[2]]


@pytest.fixture
def deployed(project: Path) -> Iterator[tuple[Path, str, str]]:
    grpc, rest = free_port(), free_port()
    (project / "serving_configs" / "gates.yaml").write_text(
        "base_path: ../models/gates\nversion_policy: {specific: [1]}\nversion_labels: {stable: 1}\n"
        f"router: true\nreplicas: 2\nports: {{grpc: {grpc}, rest: {rest}}}\n"
        "logging: {sample: 1.0, path: ../logs, max_mb: 64}\n"
    )
    shutil.rmtree(project / ".tfso" / "rollouts", ignore_errors=True)
    shutil.rmtree(project / "logs", ignore_errors=True)
    run = tfsctl(project, "deploy", "gates", "--runtime", "local")
    assert run.returncode == 0, run.stderr
    try:
        yield project, f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc}"
    finally:
        tfsctl(project, "rollout", "abort", "gates", timeout=120)
        tfsctl(project, "stop", "gates", timeout=60)
        canary = project / ".tfso" / "deployments" / "gates.canary.json"
        if canary.exists():
            for r in json.loads(canary.read_text())["replicas"]:
                try:
                    os.killpg(r["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass


GATE = ["--steps", "25,50,100", "--interval", "2s", "--min-requests", "10", "--threshold", "2",
        "--max-drift", "0.25", "--min-output-rows", "200"]


def test_canary_that_answers_differently_rolls_back_with_zero_failed_requests(deployed) -> None:
    root, rest, grpc = deployed
    with VariedLoad(rest, grpc) as load:
        wait_for(lambda: len(load.records) > 50, 60, "load to start")
        run = tfsctl(root, "rollout", "start", "gates", "--version", "3", *GATE, timeout=400)
        after = len(load.records)
        wait_for(lambda: len(load.records) > after + 50, 60, "requests after the rollback")
    assert run.returncode == 1, run.stdout + run.stderr
    assert load.failures() == [], load.failures()[:5]
    status = rollout_status(root, "gates")
    assert status["phase"] == "failed" and "output drift PSI" in status["message"], status["message"]
    failed = [h for h in status["history"] if h["decision"] in ("check failed", "roll back")]
    assert len(failed) == 2 and all(h["drift_psi"] > 0.25 for h in failed)
    # Errors and latency were fine: only the outputs gate failed it.
    assert all(h["error_rate"] == 0 for h in failed)
    # The canary did serve clients (it answered quickly) before it was rolled back...
    assert any(r[1] == 3.0 for r in load.records)
    # ... and after, every answer is stable's again.
    assert {r[1] for r in load.records[after:]} == {2.0}
    shown = tfsctl(root, "rollout", "status", "gates")
    assert "OUTPUT PSI" in shown.stdout and "output drift PSI" in shown.stdout, shown.stdout


def test_same_output_canary_is_promoted(deployed) -> None:
    root, rest, grpc = deployed
    with VariedLoad(rest, grpc) as load:
        wait_for(lambda: len(load.records) > 50, 60, "load to start")
        run = tfsctl(root, "rollout", "start", "gates", "--version", "2", *GATE, timeout=400)
    assert run.returncode == 0, run.stdout + run.stderr
    assert load.failures() == [], load.failures()[:5]
    status = rollout_status(root, "gates")
    assert status["phase"] == "succeeded"
    passed = [h for h in status["history"] if h["decision"].startswith("weight") or h["decision"] == "promote"]
    psis = [h["drift_psi"] for h in passed if h["drift_psi"] is not None]
    assert len(psis) == 3 and max(psis) <= 0.25, psis
    assert "specific: [2]" in (root / "serving_configs" / "gates.yaml").read_text()


def test_max_drift_without_logging_is_refused_with_the_fix(project: Path) -> None:
    (project / "serving_configs" / "nolog.yaml").write_text(
        "base_path: ../models/gates\nversion_policy: {specific: [1]}\nrouter: true\n")
    run = tfsctl(project, "rollout", "start", "nolog", "--version", "2", "--max-drift", "0.2")
    assert run.returncode != 0
    err = run.stdout + run.stderr
    assert "error:" in err and "nolog logs no predictions" in err, err
    assert "fix:" in err and "logging: {sample" in err, err
    assert not (project / ".tfso" / "rollouts" / "nolog.json").exists()


SHADOW = ["--mode", "shadow", "--steps", "50,100", "--interval", "2s", "--min-requests", "10",
          "--threshold", "2", "--min-output-rows", "200"]


def _shadow_log(root: Path) -> list:  # type: ignore[type-arg]
    """The canary's logged answers, parsed with TF's TFRecord reader and upstream's protos."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    files = sorted(str(p) for p in (root / "logs").glob("gates.shadow-*.tfrecord"))
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def test_shadow_canary_that_disagrees_never_answers_a_client_and_rolls_back(deployed) -> None:
    root, rest, grpc = deployed
    with VariedLoad(rest, grpc) as load:
        wait_for(lambda: len(load.records) > 50, 60, "load to start")
        run = tfsctl(root, "rollout", "start", "gates", "--version", "3", *SHADOW, timeout=400)
    assert run.returncode == 1, run.stdout + run.stderr
    assert load.failures() == [], load.failures()[:5]
    # The stable answer is what every client got: the canary (b = 3) never answered one.
    assert {r[1] for r in load.records} == {2.0}
    status = rollout_status(root, "gates")
    assert status["phase"] == "failed" and "agreement 0.00% < 99.00%" in status["message"], status["message"]
    assert "max abs diff 1" in status["message"]
    failed = [h for h in status["history"] if h["decision"] in ("check failed", "roll back")]
    assert len(failed) == 2 and all(h["agreement"] == 0.0 for h in failed)
    # Its answers were logged: version 3, y = 0.5x + 3 for the very inputs stable answered.
    logged = _shadow_log(root)
    assert len(logged) >= 200
    for pl in logged[:50]:
        assert pl.log_metadata.model_spec.version.value == 3
        x = tf_value(pl.predict_log.request.inputs["x"])
        y = tf_value(pl.predict_log.response.outputs["y"])
        assert abs(y - (0.5 * x + 3.0)) < 1e-4
    shown = tfsctl(root, "rollout", "status", "gates")
    assert "AGREEMENT" in shown.stdout and "router weight 0%" in shown.stdout, shown.stdout


def tf_value(proto) -> float:  # type: ignore[no-untyped-def]
    import tensorflow as tf

    return float(tf.make_ndarray(proto).reshape(-1)[0])


def test_shadow_canary_that_agrees_is_promoted_with_latency_beside_stable(deployed) -> None:
    root, rest, grpc = deployed
    with VariedLoad(rest, grpc) as load:
        wait_for(lambda: len(load.records) > 50, 60, "load to start")
        run = tfsctl(root, "rollout", "start", "gates", "--version", "2", *SHADOW, timeout=400)
    assert run.returncode == 0, run.stdout + run.stderr
    assert load.failures() == [], load.failures()[:5]
    status = rollout_status(root, "gates")
    assert status["phase"] == "succeeded"
    passed = [h for h in status["history"] if h["decision"] in ("weight 100%", "promote")]
    assert len(passed) == 2 and all(h["agreement"] >= 0.99 for h in passed), passed
    # The canary's p99 (its own histogram: mirrored requests only) beside stable's.
    assert all(h["p99_ms"] is not None for h in passed), passed
    assert "stable p99" in passed[0]["reason"] and "agreement 100.00%" in passed[0]["reason"], passed[0]
    assert "specific: [2]" in (root / "serving_configs" / "gates.yaml").read_text()


def test_agreement_without_shadow_is_refused(project: Path) -> None:
    run = tfsctl(project, "rollout", "start", "gates", "--version", "2", "--min-agreement", "0.9")
    assert run.returncode != 0 and "--mode shadow" in run.stdout + run.stderr
