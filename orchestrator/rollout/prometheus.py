"""Canary analysis from a Prometheus URL (`monitoring: {prometheus_url: ...}` in the spec).

The Prometheus the user runs scrapes every replica with the labels `tfsctl monitor` and the
ServiceMonitor give (deployment, role, replica). Each sample is two PromQL instant queries over
TF Serving's own metrics, per role and replica: `:tensorflow:serving:request_count` by status
(errors) and `:tensorflow:serving:request_latency` (successful inference calls and the latency
histogram, API "" = status and metadata calls left out), the same reading as
`metrics.snapshot_from_text`. The rate over an analysis step is the difference of two samples.

Counts are added up per replica, from each replica's increase since the last sample, as
`increase()` would: a replica that restarts (its counter drops) counts from zero, one that
vanishes (a replica-ratio step, a removed canary) takes nothing away. Prometheus's own
`increase()` is not used because it extrapolates to the range's edges, and the analysis counts
requests (`min_requests`), not estimates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import requests

from orchestrator.errors import RolloutError
from orchestrator.rollout.metrics import REQUEST_COUNT, REQUEST_LATENCY, Snapshot

if TYPE_CHECKING:
    from orchestrator.runtime.base import Replica

log = logging.getLogger(__name__)
PROMETHEUS_SOURCE = "prometheus (tf-serving request_count)"
ROLES = ("stable", "canary")
INFERENCE = 'API!=""'  # status and metadata calls carry API "": not inference traffic


def _selector(metric: str, deployment: str, model: str, extra: str = "") -> str:
    # TF Serving's names start with ':', which PromQL reads only as a __name__ matcher
    return (f'{{__name__="{metric}", deployment="{deployment}", model_name="{model}"'
            + (f", {extra}" if extra else "") + "}")


class PrometheusCounters:
    """A `MetricsSource`: cumulative stable/canary snapshots from a Prometheus server."""

    def __init__(self, url: str, deployment: str, model: str, *, timeout_s: float = 5.0,
                 session: requests.Session | None = None) -> None:
        self.url, self.deployment, self.model, self.timeout_s = url.rstrip("/"), deployment, model, timeout_s
        self.session = session or requests.Session()
        self._seen: dict[tuple[str, str], Snapshot] = {}
        self._totals = {role: Snapshot(source=PROMETHEUS_SOURCE) for role in ROLES}

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector; RolloutError naming the URL when there is none."""
        try:
            resp = self.session.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=self.timeout_s)
            body = resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise RolloutError(
                f"the Prometheus at {self.url} (monitoring.prometheus_url) does not answer: "
                f"{type(exc).__name__}: {str(exc)[:200]}",
                fix="check the URL and that this machine reaches it (for an in-cluster Prometheus: "
                "`kubectl port-forward -n monitoring svc/prometheus 9090` and http://127.0.0.1:9090), "
                "or remove prometheus_url to read each replica's metrics directly") from None
        if resp.status_code != 200 or body.get("status") != "success":
            raise RolloutError(f"the Prometheus at {self.url} refused query {expr!r}: HTTP {resp.status_code} "
                               f"{body.get('errorType', '')}: {body.get('error', '')}",
                               fix="check that monitoring.prometheus_url points at a Prometheus server "
                               "(its /api/v1/query answers)")
        return list(body["data"]["result"])

    def check(self) -> None:
        """Refuse before any canary starts: the URL answers and scrapes this deployment."""
        up = self.query(f'up{{deployment="{self.deployment}"}}')
        if not any(float(r["value"][1]) == 1.0 for r in up):
            raise RolloutError(
                f"the Prometheus at {self.url} scrapes no replica of {self.deployment} "
                f"(no up{{deployment=\"{self.deployment}\"}} == 1)",
                fix="on a cluster, deploy with `kubernetes: {service_monitor: true}` (prometheus-operator) or "
                f"add the job `tfsctl monitor render {self.deployment} --target kubernetes` writes; locally, "
                f"`tfsctl monitor up {self.deployment}` (its URL is the one to give)")

    def _read(self) -> dict[tuple[str, str], Snapshot]:
        """Every replica's cumulative snapshot as Prometheus last scraped it."""
        d, m = self.deployment, self.model
        by = "role, replica"
        counts = self.query(f"sum by ({by}, status) ({_selector(REQUEST_COUNT, d, m)})")
        ok = self.query(f"sum by ({by}) ({_selector(REQUEST_LATENCY + '_count', d, m, INFERENCE)})")
        buckets = self.query(f"sum by ({by}, le) ({_selector(REQUEST_LATENCY + '_bucket', d, m, INFERENCE)})")
        parts: dict[tuple[str, str], dict[str, Any]] = {}

        def part(r: dict[str, Any]) -> dict[str, Any]:
            key = (r["metric"].get("role", ""), r["metric"].get("replica", ""))
            return parts.setdefault(key, {"ok": 0.0, "errors": 0.0, "buckets": {}})

        for r in counts:
            if r["metric"].get("status", "OK") != "OK":
                part(r)["errors"] += float(r["value"][1])
        for r in ok:
            part(r)["ok"] += float(r["value"][1])
        for r in buckets:
            le = r["metric"].get("le", "+Inf")
            bound = float("inf") if le in ("+Inf", "inf") else float(le)
            part(r)["buckets"][bound] = float(r["value"][1])
        return {key: Snapshot(p["ok"] + p["errors"], p["errors"], p["buckets"], PROMETHEUS_SOURCE)
                for key, p in parts.items()}

    def sample(self, replicas: Sequence[Replica]) -> dict[str, Snapshot]:
        """Cumulative totals per role. When Prometheus stops answering mid-rollout the totals
        stay where they were: the step sees no requests and halts (no data), it does not fail."""
        try:
            now = self._read()
        except RolloutError as exc:
            log.warning("canary analysis: %s", exc.message)
            return dict(self._totals)
        for (role, replica), snap in now.items():
            if role not in self._totals:
                continue
            before = self._seen.get((role, replica), Snapshot())
            restarted = snap.requests < before.requests
            self._totals[role] = self._totals[role] + (snap if restarted else snap - before)
            self._seen[(role, replica)] = snap
        return dict(self._totals)

