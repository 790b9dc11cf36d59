"""Recording and alert rules over the per-version `tfso_*` metrics and HAProxy's exporter. Pure.

Recording rules follow Prometheus's `level:metric:operations` naming: `model_version:` rules are
aggregated by (deployment, model, version), `instance:` rules by scrape target, `backend:` rules
by HAProxy backend. The rate window is a parameter (1m by default; tests use seconds), and it is
part of each name (`rate1m`), so a dashboard or a query never mixes windows by accident.

Alerts read the recording rules, so what fires is what the dashboard shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
BY_VERSION = "deployment, model, version"
BY_FEATURE = "deployment, model, version, feature, side"
REPLICAS_JOB = "replicas"
ROUTER_JOB = "router"
QUALITY_JOB = "quality"


@dataclass(frozen=True)
class Thresholds:
    """When alerts fire; `for_s` is how long a condition must hold first."""

    error_ratio: float = 0.05
    p99_s: float = 0.5
    queue_full_ratio: float = 0.9
    for_s: float = 60.0
    max_psi: float = 0.2
    min_accuracy: float = 0.9


@dataclass(frozen=True)
class RuleNames:
    """The recording rule names for one window, for rules, alerts, dashboards and readers."""

    window: str = "1m"

    @property
    def rate(self) -> str:
        return f"rate{self.window}"

    @property
    def requests(self) -> str:
        return f"model_version:tfso_requests:{self.rate}"

    @property
    def errors(self) -> str:
        return f"model_version:tfso_request_errors:{self.rate}"

    @property
    def error_ratio(self) -> str:
        return f"model_version:tfso_request_error_ratio:{self.rate}"

    def latency(self, quantile: str) -> str:
        return f"model_version:tfso_request_duration_seconds:{quantile}_{self.rate}"

    @property
    def queue_depth(self) -> str:
        return "model_version:tfso_batch_queue_depth_batches:max"

    @property
    def instance_requests(self) -> str:
        return f"instance:tfso_requests:{self.rate}"

    @property
    def instance_errors(self) -> str:
        return f"instance:tfso_request_errors:{self.rate}"

    @property
    def router_requests(self) -> str:
        return f"backend:haproxy_backend_http_requests:{self.rate}"

    # Model quality (the quality exporter's gauges; no rate, so no window in the name).
    @property
    def drift_psi(self) -> str:
        return "model_version_feature:tfso_drift_psi:max"

    @property
    def drift_js(self) -> str:
        return "model_version_feature:tfso_drift_js_distance:max"

    @property
    def accuracy(self) -> str:
        return "model_version:tfso_feedback_accuracy:min"


def recording_rules(names: RuleNames) -> list[dict[str, str]]:
    w = names.window
    by_instance = "deployment, instance, role, replica"
    rules = [
        {"record": names.requests, "expr": f"sum by ({BY_VERSION}) (rate(tfso_requests_total[{w}]))"},
        {"record": names.errors,
         "expr": f"sum by ({BY_VERSION}) (rate(tfso_request_errors_total[{w}]))"},
        # A version with no error series yet has ratio 0, not "no data".
        {"record": names.error_ratio,
         "expr": f"(sum by ({BY_VERSION}) (rate(tfso_request_errors_total[{w}])) "
                 f"or (sum by ({BY_VERSION}) (rate(tfso_requests_total[{w}])) * 0)) "
                 f"/ sum by ({BY_VERSION}) (rate(tfso_requests_total[{w}]))"},
    ]
    for label, q in QUANTILES:
        rules.append({
            "record": names.latency(label),
            "expr": f"histogram_quantile({q}, sum by ({BY_VERSION}, le) "
                    f"(rate(tfso_request_duration_seconds_bucket[{w}])))",
        })
    rules += [
        {"record": names.queue_depth,
         "expr": f"max by ({BY_VERSION}) (tfso_batch_queue_depth_batches)"},
        {"record": names.instance_requests,
         "expr": f"sum by ({by_instance}) (rate(tfso_requests_total[{w}]))"},
        {"record": names.instance_errors,
         "expr": f"sum by ({by_instance}) (rate(tfso_request_errors_total[{w}]))"},
        {"record": names.router_requests,
         "expr": f"sum by (deployment, proxy) (rate(haproxy_backend_http_requests_total[{w}]))"},
        {"record": names.drift_psi, "expr": f"max by ({BY_FEATURE}) (tfso_drift_psi)"},
        {"record": names.drift_js, "expr": f"max by ({BY_FEATURE}) (tfso_drift_js_distance)"},
        {"record": names.accuracy, "expr": f"min by ({BY_VERSION}) (tfso_feedback_accuracy)"},
    ]
    return rules


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{int(seconds * 1000)}ms"


def alert_rules(names: RuleNames, thresholds: Thresholds) -> list[dict[str, Any]]:
    t = thresholds
    hold = _duration(t.for_s)

    def alert(name: str, expr: str, summary: str, severity: str = "warning") -> dict[str, Any]:
        return {"alert": name, "expr": expr, "for": hold, "labels": {"severity": severity},
                "annotations": {"summary": summary}}

    return [
        alert("TfsoErrorRatioHigh", f"{names.error_ratio} > {t.error_ratio:g}",
              f"{{{{ $labels.model }}}} version {{{{ $labels.version }}}}: error ratio "
              f"{{{{ $value | humanizePercentage }}}} > {t.error_ratio:.2%}", "critical"),
        alert("TfsoLatencyP99OverBudget", f"{names.latency('p99')} > {t.p99_s:g}",
              f"{{{{ $labels.model }}}} version {{{{ $labels.version }}}}: p99 "
              f"{{{{ $value | humanizeDuration }}}} > {t.p99_s:g}s"),
        alert("TfsoModelNotAvailable",
              "max by (deployment, instance, model) (tfso_model_version_available) == 0",
              "{{ $labels.model }} has no AVAILABLE version on {{ $labels.instance }}", "critical"),
        alert("TfsoReplicaDown", f'up{{job="{REPLICAS_JOB}"}} == 0',
              "{{ $labels.role }} replica {{ $labels.replica }} ({{ $labels.instance }}) is down",
              "critical"),
        alert("TfsoRouterDown", f'up{{job="{ROUTER_JOB}"}} == 0',
              "the router (HAProxy) of {{ $labels.deployment }} is down", "critical"),
        alert("TfsoBatchQueueFull",
              f"max by (deployment, instance, model, version) (tfso_batch_queue_depth_batches) "
              f"/ on (instance) group_left max by (instance) (tfso_batch_queue_capacity_batches) "
              f">= {t.queue_full_ratio:g}",
              "{{ $labels.model }} version {{ $labels.version }}: batching queue "
              "{{ $value | humanizePercentage }} full on {{ $labels.instance }}"),
        alert("TfsoFeatureDrift", f"{names.drift_psi} > {t.max_psi:g}",
              "{{ $labels.model }} version {{ $labels.version }}: {{ $labels.side }} "
              f"{{{{ $labels.feature }}}} drifted (PSI {{{{ $value | printf \"%.3f\" }}}} > "
              f"{t.max_psi:g})"),
        alert("TfsoAccuracyLow", f"{names.accuracy} < {t.min_accuracy:g}",
              f"{{{{ $labels.model }}}} version {{{{ $labels.version }}}}: accuracy on late "
              f"labels {{{{ $value | humanizePercentage }}}} < {t.min_accuracy:.0%}", "critical"),
        alert("TfsoQualityExporterDown", f'up{{job="{QUALITY_JOB}"}} == 0',
              "the drift/accuracy exporter of {{ $labels.deployment }} is down"),
    ]


def rules_yaml(names: RuleNames, thresholds: Thresholds, *, interval_s: float | None = None) -> str:
    """The rule file Prometheus loads (`rule_files:`), both groups."""
    groups: list[dict[str, Any]] = [
        {"name": "tfso-recording", "rules": recording_rules(names)},
        {"name": "tfso-alerts", "rules": alert_rules(names, thresholds)},
    ]
    if interval_s is not None:
        for group in groups:
            group["interval"] = _duration(interval_s)
    return yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000)
