"""The numbers behind `tfsctl monitor NAME`: per replica and version, from Prometheus or direct.

Two sources give the same rows:
- `PrometheusSource` asks the deployment's Prometheus (when `tfsctl monitor up` runs it);
- `DirectSource` scrapes every replica's metrics page itself and turns two successive scrapes into
  rates (so its first sample has counts but no rates yet).
A replica that does not answer is a row with `up=False`, never an exception: the view must keep
drawing while a replica dies or restarts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import requests

from orchestrator.rollout.metrics import parse_prometheus

DURATION = "tfso_request_duration_seconds"


@dataclass(frozen=True)
class Row:
    role: str  # stable | canary
    replica: str
    address: str
    up: bool
    version: str = ""
    requests: float = 0.0  # cumulative
    rps: float | None = None
    error_ratio: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    queue: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    role: str
    replica: str
    address: str  # host:port of the REST API


def targets(state: Mapping[str, Any], canary: Mapping[str, Any] | None) -> list[Target]:
    out = []
    for role, st in (("stable", state), ("canary", canary)):
        for r in (st or {}).get("replicas", []):
            out.append(Target(role, str(r.get("index", 0)), f"127.0.0.1:{r['rest_port']}"))
    return out


def quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """Prometheus's histogram_quantile over cumulative buckets (upper bound -> count)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower


@dataclass
class _Counts:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] | None = None
    queue: float | None = None


def _per_version(text: str, model: str) -> dict[str, _Counts]:
    out: dict[str, _Counts] = {}
    for s in parse_prometheus(text):
        if s.labels.get("model") != model or not s.name.startswith("tfso_"):
            continue
        c = out.setdefault(s.labels.get("version", ""), _Counts())
        if s.name == "tfso_requests_total":
            c.requests += s.value
        elif s.name == "tfso_request_errors_total":
            c.errors += s.value
        elif s.name == DURATION + "_bucket":
            le = s.labels.get("le", "+Inf")
            bound = math.inf if le in ("+Inf", "inf") else float(le)
            c.buckets = c.buckets or {}
            c.buckets[bound] = c.buckets.get(bound, 0.0) + s.value
        elif s.name == "tfso_batch_queue_depth_batches":
            c.queue = (c.queue or 0.0) + s.value
    out.pop("", None)  # requests whose version never resolved (not found): no version to show
    return out


class DirectSource:
    """Scrapes each replica; rates from the previous scrape of the same replica."""

    name = "direct"

    def __init__(self, model: str, path: str, timeout_s: float = 1.0) -> None:
        self.model, self.path, self.timeout_s = model, path, timeout_s
        self._last: dict[str, tuple[float, dict[str, _Counts]]] = {}
        self._session = requests.Session()

    def sample(self, targets: Sequence[Target], now: float | None = None) -> list[Row]:
        rows = []
        for t in targets:
            now_t = time.monotonic() if now is None else now
            try:
                resp = self._session.get(f"http://{t.address}{self.path}", timeout=self.timeout_s)
                resp.raise_for_status()
            except requests.RequestException:
                self._last.pop(t.address, None)
                rows.append(Row(t.role, t.replica, t.address, up=False))
                continue
            counts = _per_version(resp.text, self.model)
            previous = self._last.get(t.address)
            self._last[t.address] = (now_t, counts)
            for version, c in sorted(counts.items()):
                row = Row(t.role, t.replica, t.address, True, version, c.requests, queue=c.queue)
                if previous is not None and version in previous[1] and now_t > previous[0]:
                    before = previous[1][version]
                    dt = now_t - previous[0]
                    n = max(0.0, c.requests - before.requests)
                    errors = max(0.0, c.errors - before.errors)
                    window = {le: max(0.0, v - (before.buckets or {}).get(le, 0.0))
                              for le, v in (c.buckets or {}).items()}
                    p50, p99 = quantile(window, 0.5), quantile(window, 0.99)
                    row = Row(t.role, t.replica, t.address, True, version, c.requests, n / dt,
                              errors / n if n else None,
                              None if p50 is None else p50 * 1e3,
                              None if p99 is None else p99 * 1e3, c.queue)
                rows.append(row)
            if not counts:
                rows.append(Row(t.role, t.replica, t.address, True))
        return rows


class PrometheusSource:
    """The same rows from the deployment's Prometheus (rates over its rule window)."""

    name = "prometheus"

    def __init__(self, url: str, model: str, window: str, timeout_s: float = 2.0) -> None:
        self.url, self.model, self.window, self.timeout_s = url, model, window, timeout_s

    def _query(self, expr: str) -> list[dict[str, Any]]:
        resp = requests.get(f"{self.url}/api/v1/query", params={"query": expr},
                            timeout=self.timeout_s)
        resp.raise_for_status()
        return list(resp.json()["data"]["result"])

    def sample(self, targets: Sequence[Target], now: float | None = None) -> list[Row]:
        m, w = self.model, self.window
        sel = f'{{model="{m}"}}'
        by = "instance, version"
        queries = {
            "requests": f"sum by ({by}) (tfso_requests_total{sel})",
            "rps": f"sum by ({by}) (rate(tfso_requests_total{sel}[{w}]))",
            "errors": f"sum by ({by}) (rate(tfso_request_errors_total{sel}[{w}]))",
            "p50": f"histogram_quantile(0.5, sum by ({by}, le) (rate({DURATION}_bucket{sel}[{w}])))",
            "p99": f"histogram_quantile(0.99, sum by ({by}, le) (rate({DURATION}_bucket{sel}[{w}])))",
            "queue": f"sum by ({by}) (tfso_batch_queue_depth_batches{sel})",
        }
        values: dict[str, dict[tuple[str, str], float]] = {}
        for what, expr in queries.items():
            values[what] = {(r["metric"].get("instance", ""), r["metric"].get("version", "")):
                           float(r["value"][1]) for r in self._query(expr)}
        up = {r["metric"].get("instance", ""): float(r["value"][1]) == 1.0
              for r in self._query('up{job="replicas"}')}
        rows = []
        for t in targets:
            if not up.get(t.address, False):
                rows.append(Row(t.role, t.replica, t.address, up=False))
                continue
            versions = sorted({v for (inst, v) in values["requests"] if inst == t.address and v})
            for v in versions:
                key = (t.address, v)

                def num(name: str, k: tuple[str, str] = key) -> float | None:
                    x = values[name].get(k)
                    return None if x is None or math.isnan(x) else x

                rps, errs = num("rps"), num("errors")
                p50, p99 = num("p50"), num("p99")
                rows.append(Row(t.role, t.replica, t.address, True, v,
                                values["requests"].get(key, 0.0), rps,
                                (errs or 0.0) / rps if rps else None,
                                None if p50 is None else p50 * 1e3,
                                None if p99 is None else p99 * 1e3, num("queue")))
            if not versions:
                rows.append(Row(t.role, t.replica, t.address, True))
        return rows
