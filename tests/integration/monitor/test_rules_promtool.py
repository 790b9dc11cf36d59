"""The generated rules and scrape config, checked and unit-tested by Prometheus's own promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.monitor.rules import RuleNames, Thresholds, rules_yaml
from orchestrator.monitor.scrape import (
    REPLICA_TARGETS,
    ROUTER_TARGETS,
    RULES_FILE,
    Intervals,
    prometheus_yaml,
    replica_targets,
    router_targets,
    targets_json,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `make system` installs Debian's prometheus package")
    return path


def run(promtool: str, *args: str) -> str:
    out = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_check_config_and_rules(promtool: str, tmp_path: Path) -> None:
    (tmp_path / RULES_FILE).write_text(rules_yaml(RuleNames("1m"), Thresholds()))
    state = {"replicas": [{"index": 0, "rest_port": 9001}, {"index": 1, "rest_port": 9002}],
             "router": {"metrics_port": 9003}}
    canary = {"replicas": [{"index": 0, "rest_port": 9004}]}
    groups = replica_targets("d", state, canary)
    assert [g["labels"]["role"] for g in groups] == ["stable", "stable", "canary"]
    (tmp_path / REPLICA_TARGETS).write_text(targets_json(groups))
    (tmp_path / ROUTER_TARGETS).write_text(targets_json(router_targets("d", state)))
    (tmp_path / "prometheus.yml").write_text(
        prometheus_yaml(tmp_path, "/monitoring/prometheus/metrics", Intervals(1, 1)))
    out = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert "SUCCESS" in out
    out = run(promtool, "check", "rules", str(tmp_path / RULES_FILE))
    assert "SUCCESS" in out


def _labels(**kw: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in kw.items()) + "}"


def test_rules_unit_tests(promtool: str, tmp_path: Path) -> None:
    """Synthetic series in, recording rule values and alerts out, as `promtool test rules` sees."""
    names = RuleNames("1m")
    (tmp_path / RULES_FILE).write_text(rules_yaml(names, Thresholds(p99_s=0.5, for_s=60)))
    target_a = {"deployment": "d", "instance": "127.0.0.1:1", "job": "replicas",
                "role": "stable", "replica": "0"}
    target_b = {**target_a, "instance": "127.0.0.1:2", "role": "canary"}
    call = {"signature": "serving_default", "method": "predict", "protocol": "rest", "model": "m"}
    v1 = {**target_a, **call, "version": "1"}
    v2 = {**target_b, **call, "version": "2"}
    series = [
        # 15 s apart: 60 per sample = 4 requests per second for each version.
        ("tfso_requests_total" + _labels(**v1), "0+60x40"),
        ("tfso_requests_total" + _labels(**v2), "0+60x40"),
        ("tfso_request_errors_total" + _labels(**v2, code="INTERNAL"), "0+30x40"),  # half fail
        ("tfso_request_duration_seconds_bucket" + _labels(**v1, le="0.1"), "0+60x40"),
        ("tfso_request_duration_seconds_bucket" + _labels(**v1, le="+Inf"), "0+60x40"),
        ("tfso_request_duration_seconds_bucket" + _labels(**v2, le="0.5"), "0+0x40"),
        ("tfso_request_duration_seconds_bucket" + _labels(**v2, le="1"), "0+30x40"),
        ("tfso_request_duration_seconds_bucket" + _labels(**v2, le="+Inf"), "0+30x40"),
        ("up" + _labels(**target_a), "1x40"),
        ("up" + _labels(**target_b), "1 1 0x38"),
        ("tfso_model_version_available" + _labels(**target_a, model="m", version="1"), "1x40"),
        ("tfso_model_version_available" + _labels(**target_b, model="m", version="2"), "0x40"),
        ("tfso_batch_queue_depth_batches" + _labels(**target_a, model="m", version="1"), "3 10x39"),
        ("tfso_batch_queue_capacity_batches" + _labels(**target_a), "10x40"),
        ("up" + _labels(deployment="d", instance="127.0.0.1:3", job="router", role="router"),
         "1x40"),
    ]
    by_version = {"deployment": "d", "model": "m"}
    tests = {
        "rule_files": [str(tmp_path / RULES_FILE)],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "promql_expr_test": [
                {"expr": names.requests, "eval_time": "5m",
                 "exp_samples": [{"labels": names.requests + _labels(**by_version, version=v),
                                  "value": 4} for v in ("1", "2")]},
                {"expr": names.error_ratio, "eval_time": "5m",
                 "exp_samples": [
                     {"labels": names.error_ratio + _labels(**by_version, version="1"), "value": 0},
                     {"labels": names.error_ratio + _labels(**by_version, version="2"),
                      "value": 0.5}]},
                # v1: every request in (0, 0.1] -> p99 interpolates to 0.099; v2 in (0.5, 1].
                {"expr": names.latency("p99"), "eval_time": "5m",
                 "exp_samples": [
                     {"labels": names.latency("p99") + _labels(**by_version, version="1"),
                      "value": 0.099},
                     {"labels": names.latency("p99") + _labels(**by_version, version="2"),
                      "value": 0.995}]},
                {"expr": names.queue_depth, "eval_time": "5m",
                 "exp_samples": [{"labels": names.queue_depth + _labels(**by_version, version="1"),
                                  "value": 10}]},
            ],
            "alert_rule_test": [
                # Before `for` has passed nothing fires, although conditions already hold.
                *({"alertname": a, "eval_time": "30s", "exp_alerts": []} for a in (
                    "TfsoErrorRatioHigh", "TfsoReplicaDown", "TfsoModelNotAvailable")),
                {"alertname": "TfsoErrorRatioHigh", "eval_time": "5m", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", **by_version, "version": "2"},
                    "exp_annotations": {"summary": "m version 2: error ratio 50% > 5.00%"}}]},
                {"alertname": "TfsoLatencyP99OverBudget", "eval_time": "5m", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", **by_version, "version": "2"},
                    "exp_annotations": {"summary": "m version 2: p99 995ms > 0.5s"}}]},
                {"alertname": "TfsoModelNotAvailable", "eval_time": "5m", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "deployment": "d",
                                   "instance": "127.0.0.1:2", "model": "m"},
                    "exp_annotations": {"summary": "m has no AVAILABLE version on 127.0.0.1:2"}}]},
                {"alertname": "TfsoReplicaDown", "eval_time": "5m", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", **target_b},
                    "exp_annotations": {"summary": "canary replica 0 (127.0.0.1:2) is down"}}]},
                {"alertname": "TfsoRouterDown", "eval_time": "5m", "exp_alerts": []},
                {"alertname": "TfsoBatchQueueFull", "eval_time": "5m", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", **by_version, "version": "1",
                                   "instance": "127.0.0.1:1"},
                    "exp_annotations": {"summary": "m version 1: batching queue 100% full on "
                                                   "127.0.0.1:1"}}]},
            ],
        }],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    out = run(promtool, "test", "rules", str(tmp_path / "tests.yml"))
    assert "SUCCESS" in out


def test_quality_rules(promtool: str, tmp_path: Path) -> None:
    """Drift and late-label accuracy: recording rules and alerts on the exporter's gauges."""
    names = RuleNames("1m")
    (tmp_path / RULES_FILE).write_text(
        rules_yaml(names, Thresholds(for_s=60, max_psi=0.2, min_accuracy=0.9)))
    target = {"deployment": "d", "instance": "127.0.0.1:7", "job": "quality", "role": "quality"}
    f = {**target, "model": "m", "side": "input"}
    series = [
        ("tfso_drift_psi" + _labels(**f, version="1", feature="x[0]"), "0.01x40"),
        ("tfso_drift_psi" + _labels(**f, version="2", feature="x[0]"), "0.05 0.35x39"),
        ("tfso_drift_psi" + _labels(**f, version="2", feature="x[1]"), "0.19x40"),
        ("tfso_drift_js_distance" + _labels(**f, version="2", feature="x[0]"), "0.4x40"),
        ("tfso_feedback_accuracy" + _labels(**target, model="m", version="1"), "0.95x40"),
        ("tfso_feedback_accuracy" + _labels(**target, model="m", version="2"), "0.5x40"),
        ("up" + _labels(**target), "1x40"),
    ]
    feature = {"deployment": "d", "model": "m", "side": "input"}
    tests = {
        "rule_files": [str(tmp_path / RULES_FILE)],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "promql_expr_test": [
                {"expr": f'{names.drift_psi}{{version="2"}}', "eval_time": "5m",
                 "exp_samples": [
                     {"labels": names.drift_psi + _labels(**feature, version="2", feature=x),
                      "value": v} for x, v in (("x[0]", 0.35), ("x[1]", 0.19))]},
                {"expr": names.drift_js, "eval_time": "5m",
                 "exp_samples": [{"labels": names.drift_js + _labels(**feature, version="2",
                                                                      feature="x[0]"),
                                  "value": 0.4}]},
                {"expr": names.accuracy, "eval_time": "5m",
                 "exp_samples": [{"labels": names.accuracy + _labels(deployment="d", model="m",
                                                                     version=v), "value": a}
                                 for v, a in (("1", 0.95), ("2", 0.5))]},
            ],
            "alert_rule_test": [
                {"alertname": "TfsoFeatureDrift", "eval_time": "30s", "exp_alerts": []},
                {"alertname": "TfsoFeatureDrift", "eval_time": "5m", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", **feature, "version": "2",
                                   "feature": "x[0]"},
                    "exp_annotations": {"summary": "m version 2: input x[0] drifted "
                                                   "(PSI 0.350 > 0.2)"}}]},
                {"alertname": "TfsoAccuracyLow", "eval_time": "5m", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "deployment": "d", "model": "m",
                                   "version": "2"},
                    "exp_annotations": {"summary": "m version 2: accuracy on late labels 50% "
                                                   "< 90%"}}]},
                {"alertname": "TfsoQualityExporterDown", "eval_time": "5m", "exp_alerts": []},
            ],
        }],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    out = run(promtool, "test", "rules", str(tmp_path / "tests.yml"))
    assert "SUCCESS" in out
