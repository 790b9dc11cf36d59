"""Per-version samples for rollout analysis: `--metrics replicas` or `--metrics prometheus`.

Both read the same per-version `tfso_*` counters, so they give the same numbers: `replicas` sums
every replica's page (stable and canary, whatever version each serves), `prometheus` asks the
deployment's Prometheus for the same sums. "stable" is the version rolled out from, "canary" the
version rolled out to, so a canary's latency is told from stable's even when one server serves
both (labels mode). Latency buckets become microseconds, the unit the rollout Snapshot uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import requests

from orchestrator.monitor import MonitorError
from orchestrator.rollout.metrics import Snapshot, parse_prometheus
from orchestrator.state import StateStore

GROUPS = ("stable", "canary")


def _bound_us(le: str) -> float:
    return math.inf if le in ("+Inf", "inf") else float(le) * 1e6


def snapshot_from_text(text: str, model: str, version: str) -> Snapshot:
    requests_total = errors = 0.0
    buckets: dict[float, float] = {}
    for s in parse_prometheus(text):
        if s.labels.get("model") != model or s.labels.get("version") != version:
            continue
        if s.name == "tfso_requests_total":
            requests_total += s.value
        elif s.name == "tfso_request_errors_total":
            errors += s.value
        elif s.name == "tfso_request_duration_seconds_bucket":
            bound = _bound_us(s.labels.get("le", "+Inf"))
            buckets[bound] = buckets.get(bound, 0.0) + s.value
    return Snapshot(requests_total, errors, buckets)


class ReplicaVersions:
    """Sums the versions' counters over every replica's metrics page (stable and canary)."""

    def __init__(self, model: str, versions: dict[str, int], path: str,
                 addresses: Callable[[], Sequence[str]], timeout_s: float = 2.0) -> None:
        self.model, self.versions, self.path = model, versions, path
        self.addresses, self.timeout_s = addresses, timeout_s

    def sample(self) -> dict[str, Snapshot]:
        result = {g: Snapshot() for g in self.versions}
        with requests.Session() as session:
            for address in self.addresses():
                try:
                    resp = session.get(f"http://{address}{self.path}", timeout=self.timeout_s)
                except requests.RequestException:
                    continue  # a replica that died has no counters to add; the router notices
                if resp.status_code != 200:
                    continue
                for group, version in self.versions.items():
                    result[group] = result[group] + snapshot_from_text(
                        resp.text, self.model, str(version))
        return result


class PrometheusVersions:
    """The same sums, from the deployment's Prometheus (as of its last scrape)."""

    def __init__(self, url: str, model: str, versions: dict[str, int], timeout_s: float = 5.0) -> None:
        self.url, self.model, self.versions, self.timeout_s = url, model, versions, timeout_s

    def _query(self, expr: str) -> list[dict[str, Any]]:
        try:
            resp = requests.get(f"{self.url}/api/v1/query", params={"query": expr},
                                timeout=self.timeout_s)
            resp.raise_for_status()
            return list(resp.json()["data"]["result"])
        except (requests.RequestException, ValueError, KeyError) as exc:
            raise MonitorError(f"Prometheus at {self.url} did not answer: {exc}",
                               fix="check `tfsctl monitor status NAME`, or analyse with "
                                   "`--metrics replicas`") from exc

    def sample(self) -> dict[str, Snapshot]:
        result = {}
        for group, version in self.versions.items():
            sel = f'{{model="{self.model}",version="{version}"}}'
            total = self._query(f"sum(tfso_requests_total{sel})")
            errors = self._query(f"sum(tfso_request_errors_total{sel})")
            buckets = self._query(f"sum by (le) (tfso_request_duration_seconds_bucket{sel})")
            result[group] = Snapshot(
                float(total[0]["value"][1]) if total else 0.0,
                float(errors[0]["value"][1]) if errors else 0.0,
                {_bound_us(b["metric"]["le"]): float(b["value"][1]) for b in buckets})
        return result


class VersionSampled:
    """A rollout target whose `sample()` reads per-version counters; the rest is the target's."""

    def __init__(self, target: Any, reader: ReplicaVersions | PrometheusVersions) -> None:
        self._target = target
        self.reader = reader

    def sample(self) -> dict[str, Snapshot]:
        return self.reader.sample()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def reader_for(source: str, name: str, model: str, from_version: int, to_version: int,
               store: StateStore | None = None) -> ReplicaVersions | PrometheusVersions:
    """`replicas` or `prometheus` for deployment `name`; clear errors when it cannot work."""
    from orchestrator.monitor.live import targets
    from orchestrator.monitor.scrape import metrics_path
    from orchestrator.monitor.server import is_running, read_info

    store = store or StateStore()
    versions = {"stable": from_version, "canary": to_version}
    if source == "prometheus":
        info = read_info(store, name)
        if not is_running(info):
            raise MonitorError(f"--metrics prometheus: no Prometheus runs for {name}",
                               fix=f"start it with `tfsctl monitor up {name}`, or use "
                                   "`--metrics replicas`")
        assert info is not None
        return PrometheusVersions(info["url"], model, versions)
    state = store.load(name) or {}
    path = metrics_path(state)
    if path is None:
        raise MonitorError(f"--metrics {source}: {name} does not export Prometheus metrics",
                           fix="set `monitoring: {prometheus: true}` in its spec and deploy again")

    def addresses() -> list[str]:
        st = store.load(name) or state
        return [t.address for t in targets(st, store.load_canary(name))]

    return ReplicaVersions(model, versions, path, addresses)
