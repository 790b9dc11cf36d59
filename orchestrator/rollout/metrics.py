"""Metric readers for canary analysis: TF Serving's Prometheus text, and windows over counters.

TF Serving's metrics carry no version label, but a canary replica serves only the canary
version, so one replica's metrics are that version's. Counters are cumulative: a window is the
difference of two snapshots, and p99 is read from the difference of the latency histograms.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import requests

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"

_LINE = re.compile(r'^([^\s{]+)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_prometheus(text: str) -> list[Sample]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        samples.append(Sample(name, dict(_LABEL.findall(labels or "")), number))
    return samples


@dataclass(frozen=True)
class Snapshot:
    """Cumulative request/error counts and a latency histogram (µs buckets) for one model.

    `source` names where requests and errors were counted (both always from the same one).
    """

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound (µs) -> cumulative count
    source: str = ""

    def __add__(self, other: Snapshot) -> Snapshot:
        merged = dict(self.buckets)
        for le, count in other.buckets.items():
            merged[le] = merged.get(le, 0.0) + count
        return Snapshot(self.requests + other.requests, self.errors + other.errors, merged,
                        self.source or other.source)

    def __sub__(self, before: Snapshot) -> Snapshot:
        buckets = {le: max(0.0, c - before.buckets.get(le, 0.0)) for le, c in self.buckets.items()}
        return Snapshot(max(0.0, self.requests - before.requests), max(0.0, self.errors - before.errors), buckets,
                        self.source or before.source)

    def quantile_ms(self, q: float) -> float | None:
        """Quantile from cumulative buckets, interpolated inside the bucket (as Prometheus does)."""
        if not self.buckets:
            return None
        bounds = sorted(self.buckets)
        total = self.buckets[bounds[-1]]
        if total <= 0:
            return None
        rank = q * total
        previous_bound, previous_count = 0.0, 0.0
        for bound in bounds:
            count = self.buckets[bound]
            if count >= rank:
                if math.isinf(bound):
                    return previous_bound / 1000.0
                share = (rank - previous_count) / (count - previous_count) if count > previous_count else 1.0
                return (previous_bound + (bound - previous_bound) * share) / 1000.0
            previous_bound, previous_count = bound, count
        return previous_bound / 1000.0


TF_SERVING_SOURCE = "tf-serving request_count"


def snapshot_from_text(text: str, model: str) -> Snapshot:
    """requests = successful inference calls + failed calls; errors = failed calls.

    TF Serving observes latency only for successes, and counts every call by status in
    request_count; both come from one scrape, so errors never exceed requests.
    """
    ok = errors = 0.0
    buckets: dict[float, float] = {}
    for s in parse_prometheus(text):
        if s.labels.get("model_name") != model:
            continue
        # Model status and metadata calls (API "") are not inference traffic: leave them out,
        # or a router's health checks would look like canary requests.
        if s.name == REQUEST_COUNT:
            if s.labels.get("status", "OK") != "OK":
                errors += s.value
        elif s.name == REQUEST_LATENCY + "_count" and s.labels.get("API"):
            ok += s.value
        elif s.name == REQUEST_LATENCY + "_bucket" and s.labels.get("API"):
            le = float("inf") if s.labels.get("le") in ("+Inf", "inf") else float(s.labels.get("le", "inf"))
            buckets[le] = buckets.get(le, 0.0) + s.value
    return Snapshot(ok + errors, errors, buckets, TF_SERVING_SOURCE)


def scrape(rest_url: str, model: str, path: str, *, timeout_s: float = 2.0,
           session: requests.Session | None = None) -> Snapshot | None:
    """One replica's snapshot, or None when it does not answer (crashed, or monitoring off)."""
    getter = session.get if session is not None else requests.get
    try:
        response = getter(f"{rest_url}{path}", timeout=timeout_s)
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    return snapshot_from_text(response.text, model)


def total(snapshots: Iterable[Snapshot | None]) -> Snapshot:
    result = Snapshot()
    for snap in snapshots:
        if snap is not None:
            result = result + snap
    return result
