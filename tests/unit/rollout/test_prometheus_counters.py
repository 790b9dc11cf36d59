"""Canary analysis from the Prometheus URL a spec names: a URL that does not answer is refused
before any canary starts; answers are read per role and replica, and never run backwards.

The answers are canned here (the PromQL and a real Prometheus are exercised in
tests/integration/kube/test_kube_prometheus.py); the refusals use a real closed port.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import RolloutError, SpecError
from orchestrator.rollout.prometheus import PROMETHEUS_SOURCE, PrometheusCounters
from orchestrator.rollout.target import window
from orchestrator.spec import parse_spec


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vector(*rows: tuple[dict[str, str], float]) -> list[dict[str, Any]]:
    return [{"metric": labels, "value": [0, str(value)]} for labels, value in rows]


class Canned(PrometheusCounters):
    """Answers PromQL from a table (expression fragment → per-replica values)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1", "m", "m")
        self.ok: dict[tuple[str, str], float] = {}
        self.failed: dict[tuple[str, str], float] = {}
        self.down = False
        self.asked: list[str] = []

    def query(self, expr: str) -> list[dict[str, Any]]:
        self.asked.append(expr)
        if self.down:
            raise RolloutError("the Prometheus at http://127.0.0.1:1 does not answer")

        def labels(key: tuple[str, str], **more: str) -> dict[str, str]:
            return {"role": key[0], "replica": key[1], **more}
        if "request_count" in expr:
            return vector(*[(labels(k, status="OK"), v) for k, v in self.ok.items()],
                          *[(labels(k, status="INVALID_ARGUMENT"), v) for k, v in self.failed.items()])
        if "_count" in expr:
            return vector(*[(labels(k), v) for k, v in self.ok.items()])
        return vector(*[(labels(k, le="+Inf"), v) for k, v in self.ok.items()],
                      *[(labels(k, le="5000"), v) for k, v in self.ok.items()])


def test_per_role_totals_from_tf_serving_metric_names() -> None:
    prom = Canned()
    prom.ok = {("stable", "s0"): 10, ("stable", "s1"): 5, ("canary", "c0"): 4}
    prom.failed = {("canary", "c0"): 2}
    first = prom.sample([])
    assert (first["stable"].requests, first["stable"].errors) == (15, 0)
    assert (first["canary"].requests, first["canary"].errors) == (6, 2)
    assert first["canary"].source == PROMETHEUS_SOURCE and first["canary"].quantile_ms(0.99) is not None
    assert all('deployment="m"' in q and 'model_name="m"' in q for q in prom.asked)
    assert any('__name__=":tensorflow:serving:request_count"' in q for q in prom.asked)
    assert all('API!=""' in q for q in prom.asked if "request_latency" in q)


def test_vanishing_and_restarted_replicas_and_a_prometheus_gone_quiet() -> None:
    prom = Canned()
    prom.ok = {("stable", "s0"): 10, ("stable", "s1"): 5}
    before = prom.sample([])["stable"]
    prom.ok = {("stable", "s0"): 13, ("stable", "s2"): 2}  # s1 scaled away, s2 new
    after = prom.sample([])["stable"]
    assert (window(after, before).requests, window(after, before).errors) == (5, 0)
    prom.ok = {("stable", "s0"): 1, ("stable", "s2"): 2}  # s0 restarted
    again = prom.sample([])["stable"]
    assert window(again, after).requests == 1
    prom.down = True  # no answer mid-rollout: no new data (the step halts), not a failure
    assert window(prom.sample([])["stable"], again).requests == 0


def test_a_url_that_does_not_answer_is_refused_with_a_fix() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(RolloutError) as info:
        PrometheusCounters(url, "m", "m", timeout_s=2).check()
    assert url in info.value.message and "does not answer" in info.value.message
    assert info.value.fix and "prometheus_url" in info.value.fix


def test_spec_field_is_an_http_url(tmp_path: Path) -> None:
    spec = parse_spec("base_path: /models/m\nmonitoring: {prometheus_url: 'http://prom.monitoring:9090/'}\n",
                      file=tmp_path / "m.yaml", check_files=False)
    assert spec.monitoring.prometheus_url == "http://prom.monitoring:9090"
    with pytest.raises(SpecError, match="prometheus_url"):
        parse_spec("base_path: /models/m\nmonitoring: {prometheus_url: 'prom:9090'}\n",
                   file=tmp_path / "m.yaml", check_files=False)
