"""TF Serving's metrics in Prometheus text format (util/prometheus_exporter.cc).

Names are TF Serving's (`/tensorflow/serving/request_count` -> `:tensorflow:serving:request_count`),
with the same labels and histogram buckets, so dashboards built for TF Serving work unchanged.
Updated on the event loop only; no locks needed.

Beside them, on the same page, our own per-version RED metrics (`tfso_*`, Prometheus base units):
TF Serving's carry no version label, so a canary's latency could not be told from stable's.
`TFS_VERSION_METRICS=0` (env) turns them off, so their cost can be measured (bench/metrics.py).

    tfso_requests_total{model,version,signature,method,protocol}            every inference call
    tfso_request_errors_total{model,version,signature,method,protocol,code} calls that failed
    tfso_request_duration_seconds{model,version,signature,method,protocol}  successful calls
    tfso_batch_size{model,version}                  rows per session run (--enable_batching)
    tfso_batch_queue_depth_batches{model,version}   batches waiting to run (--enable_batching)
    tfso_batch_queue_capacity_batches               max_enqueued_batches (--enable_batching)
    tfso_model_load_duration_seconds{model,version} load (+ warmup) time of a loaded version
    tfso_model_version_available{model,version}     1 while the version is AVAILABLE, else 0
    tfso_process_resident_memory_bytes, tfso_process_cpu_seconds_total,
    tfso_process_start_time_seconds

A request whose model or version could not be resolved has version="" (unknown), and an
unresolved signature is "" too, so hostile input cannot grow the label sets without bound.
"""

from __future__ import annotations

import bisect
import contextvars
import itertools
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


def exponential(scale: float, growth: float, count: int) -> list[float]:
    return [scale * growth**i for i in range(count)]


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_LABELS: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
_LABELS_MAX = 10_000


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    """`a="x",b="y"`, made once per label set (label sets are bounded; see the docstring)."""
    key = (names, values)
    text = _LABELS.get(key)
    if text is None:
        if len(_LABELS) > _LABELS_MAX:
            _LABELS.clear()
        text = _LABELS[key] = ",".join(
            f'{k}="{_esc(x)}"' for k, x in zip(names, values, strict=False)
        )
    return text


@dataclass
class Counter:
    name: str
    labels: tuple[str, ...]
    values: dict[tuple[str, ...], int] = field(default_factory=dict)

    def inc(self, *label_values: str, by: int = 1) -> None:
        self.values[label_values] = self.values.get(label_values, 0) + by

    def render(self, out: list[str]) -> None:
        out.append(f"# TYPE {self.name} counter")
        for lv, v in list(self.values.items()):  # list(): scrapes render off the loop too
            labels = _labels(self.labels, lv)
            out.append(f"{self.name}{{{labels}}} {v}")


@dataclass
class Histogram:
    name: str
    labels: tuple[str, ...]
    limits: list[float]
    cells: dict[tuple[str, ...], list[float]] = field(default_factory=dict)  # counts..., sum
    _les: list[str] | None = field(default=None, repr=False, compare=False)

    def observe(self, value: float, *label_values: str) -> None:
        cell = self.cells.get(label_values)
        if cell is None:
            cell = self.cells[label_values] = [0.0] * (len(self.limits) + 2)
        cell[bisect.bisect_right(self.limits, value)] += 1
        cell[-1] += value

    def render(self, out: list[str]) -> None:
        out.append(f"# TYPE {self.name} histogram")
        les = self._les
        if les is None:  # the bucket bounds, formatted once
            les = self._les = [f'le="{_fmt(x)}"}} ' for x in self.limits] + ['le="+Inf"} ']
        for lv, cell in list(self.cells.items()):
            labels = _labels(self.labels, lv)
            prefix = f"{self.name}_bucket{{{labels}{',' if labels else ''}"
            counts = list(itertools.accumulate(map(int, cell[:-1])))
            out.extend([f"{prefix}{le}{n}" for le, n in zip(les, counts, strict=True)])
            out.append(f"{self.name}_sum{{{labels}}} {_fmt(cell[-1])}")
            out.append(f"{self.name}_count{{{labels}}} {counts[-1]}")


@dataclass
class Gauge:
    name: str
    labels: tuple[str, ...]
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def set(self, value: float, *label_values: str) -> None:
        self.values[label_values] = value

    def render(self, out: list[str]) -> None:
        out.append(f"# TYPE {self.name} gauge")
        for lv, v in list(self.values.items()):
            labels = _labels(self.labels, lv)
            out.append(f"{self.name}{{{labels}}} {_fmt(v)}" if labels else f"{self.name} {_fmt(v)}")


# Seconds; fine at the low end, where a small model on the embedded server answers.
DURATION_BUCKETS = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
]  # fmt: skip
BATCH_SIZE_BUCKETS = exponential(1, 2, 14)
PREFIX = "tfso_"


def version_metrics_enabled() -> bool:
    """TFS_VERSION_METRICS (env, default on): 0/false/off turns the tfso_* request metrics off."""
    return os.environ.get("TFS_VERSION_METRICS", "1").strip().lower() not in ("0", "false", "off")


class Call:
    """What one request resolved to, filled in as it goes (model, version, signature)."""

    __slots__ = ("method", "model", "protocol", "request_id", "signature", "version")

    def __init__(self, model: str, method: str, protocol: str, request_id: str = "") -> None:
        self.model = model
        self.method = method
        self.protocol = protocol
        self.request_id = request_id
        self.version = ""
        self.signature = ""


# The request in flight in this task: front ends set it, the core fills in version and signature.
CURRENT_CALL: contextvars.ContextVar[Call | None] = contextvars.ContextVar("tfso_call", default=None)

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


_BOOT_TIME: list[float] = []  # /proc/stat's btime, read once


def _process_lines(out: list[str]) -> None:
    """RSS, CPU seconds and start time of this process, from /proc (Linux; silent elsewhere)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        if not _BOOT_TIME:
            with open("/proc/stat", encoding="ascii") as fh:
                _BOOT_TIME.append(
                    next(float(line.split()[1]) for line in fh if line.startswith("btime"))
                )
        btime = _BOOT_TIME[0]
    except (OSError, StopIteration, IndexError, ValueError):
        return
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    rss = int(fields[21]) * _PAGE
    start = btime + int(fields[19]) / _CLK_TCK
    for name, kind, value in (
        ("process_resident_memory_bytes", "gauge", f"{rss}"),
        ("process_cpu_seconds_total", "counter", f"{cpu:.2f}"),
        ("process_start_time_seconds", "gauge", f"{start:.2f}"),
    ):
        out.append(f"# TYPE {PREFIX}{name} {kind}")
        out.append(f"{PREFIX}{name} {value}")


class VersionMetrics:
    """Our per-version RED metrics; see the module docstring for names and labels."""

    CALL_LABELS = ("model", "version", "signature", "method", "protocol")

    def __init__(self) -> None:
        p = PREFIX
        self.requests = Counter(p + "requests_total", self.CALL_LABELS)
        self.errors = Counter(p + "request_errors_total", (*self.CALL_LABELS, "code"))
        self.duration = Histogram(
            p + "request_duration_seconds", self.CALL_LABELS, DURATION_BUCKETS
        )
        self.batch_size = Histogram(p + "batch_size", ("model", "version"), BATCH_SIZE_BUCKETS)
        self.load_duration = Gauge(p + "model_load_duration_seconds", ("model", "version"))
        # Filled at scrape time by the server (collectors), so they cost nothing per request.
        self.collectors: list[Callable[[], Iterable[tuple[Gauge, float, tuple[str, ...]]]]] = []
        # One cell per label set: [request count, the duration histogram's own cell list], so a
        # request costs one dict lookup (this runs on every call; see bench/metrics.py).
        self._cells: dict[tuple[str, ...], list] = {}
        self._buckets = len(DURATION_BUCKETS)

    def record(self, call: Call, code: str, seconds: float) -> None:
        key = (call.model, call.version, call.signature, call.method, call.protocol)
        cell = self._cells.get(key)
        if cell is None:
            hist = self.duration.cells[key] = [0.0] * (self._buckets + 2)
            cell = self._cells[key] = [0, hist]
        cell[0] += 1
        if code == "OK":
            hist = cell[1]
            hist[bisect.bisect_right(DURATION_BUCKETS, seconds)] += 1
            hist[-1] += seconds
        else:
            self.errors.inc(*key, code)

    def render(self, out: list[str]) -> None:
        self.requests.values = {key: cell[0] for key, cell in list(self._cells.items())}
        for m in (self.requests, self.errors, self.duration, self.batch_size, self.load_duration):
            m.render(out)
        gauges: dict[str, Gauge] = {}
        for collect in self.collectors:
            for gauge, value, labels in collect():
                g = gauges.setdefault(gauge.name, Gauge(gauge.name, gauge.labels))
                g.set(value, *labels)
        for g in gauges.values():
            g.render(out)
        _process_lines(out)


# Gauges whose values the server computes at scrape time.
MODEL_AVAILABLE = Gauge(PREFIX + "model_version_available", ("model", "version"))
QUEUE_DEPTH = Gauge(PREFIX + "batch_queue_depth_batches", ("model", "version"))
QUEUE_CAPACITY = Gauge(PREFIX + "batch_queue_capacity_batches", ())


class Metrics:
    def __init__(self, version_metrics: bool | None = None) -> None:
        p = ":tensorflow:serving:"
        self.request_count = Counter(p + "request_count", ("model_name", "status"))
        self.request_latency = Histogram(
            p + "request_latency", ("model_name", "API", "entrypoint"), exponential(10, 1.8, 33)
        )
        self.runtime_latency = Histogram(
            p + "runtime_latency", ("model_name", "API", "runtime"), exponential(10, 1.8, 33)
        )
        self.example_counts = Histogram(
            p + "request_example_counts", ("model",), exponential(1, 2, 15)
        )
        self.example_count_total = Counter(p + "request_example_count_total", ("model",))
        self.batch_size = Histogram(
            p + "batching_session:input_batch_size", ("model_name",), exponential(1, 2, 14)
        )
        self.load_attempts = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count", ("model_path", "status")
        )
        on = version_metrics_enabled() if version_metrics is None else version_metrics
        self.versions: VersionMetrics | None = VersionMetrics() if on else None
        self.renderers: list[Callable[[list[str]], None]] = []  # e.g. payload-log counters

    def begin(self, model: str, method: str, protocol: str, request_id: str = "") -> Call:
        """Start tracking one request: what it resolves to is filled in as it goes (and logged)."""
        call = Call(model, method, protocol, request_id)
        CURRENT_CALL.set(call)
        return call

    def end(self, call: Call | None, code: str, started: float) -> None:
        if call is not None and self.versions is not None:
            self.versions.record(call, code, time.perf_counter() - started)

    def record_request(
        self, model: str, api: str, entrypoint: str, code: str, latency_us: float
    ) -> None:
        if code == "OK":
            self.request_latency.observe(latency_us, model, api, entrypoint)
        self.request_count.inc(model, code)

    def record_runtime(self, model: str, api: str, latency_us: float) -> None:
        self.runtime_latency.observe(latency_us, model, api, "TF1")

    def record_examples(self, model: str, n: int) -> None:
        self.example_counts.observe(n, model)
        self.example_count_total.inc(model, by=n)

    def render(self) -> str:
        out: list[str] = []
        for m in (
            self.request_count,
            self.request_latency,
            self.runtime_latency,
            self.example_counts,
            self.example_count_total,
            self.batch_size,
            self.load_attempts,
        ):
            m.render(out)
        if self.versions is not None:
            self.versions.render(out)
        for extra in self.renderers:
            extra(out)
        return "\n".join(out) + "\n"
