"""TF Serving's metrics in Prometheus text format (util/prometheus_exporter.cc).

Names are TF Serving's (`/tensorflow/serving/request_count` -> `:tensorflow:serving:request_count`),
with the same labels and histogram buckets, so dashboards built for TF Serving work unchanged.
Updated on the event loop only; no locks needed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


def exponential(scale: float, growth: float, count: int) -> list[float]:
    return [scale * growth**i for i in range(count)]


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class Counter:
    name: str
    labels: tuple[str, ...]
    values: dict[tuple[str, ...], int] = field(default_factory=dict)

    def inc(self, *label_values: str, by: int = 1) -> None:
        self.values[label_values] = self.values.get(label_values, 0) + by

    def render(self, out: list[str]) -> None:
        out.append(f"# TYPE {self.name} counter")
        for lv, v in self.values.items():
            labels = ",".join(f'{k}="{_esc(x)}"' for k, x in zip(self.labels, lv, strict=False))
            out.append(f"{self.name}{{{labels}}} {v}")


@dataclass
class Histogram:
    name: str
    labels: tuple[str, ...]
    limits: list[float]
    cells: dict[tuple[str, ...], list[float]] = field(default_factory=dict)  # counts..., sum

    def observe(self, value: float, *label_values: str) -> None:
        cell = self.cells.get(label_values)
        if cell is None:
            cell = self.cells[label_values] = [0.0] * (len(self.limits) + 2)
        cell[bisect.bisect_right(self.limits, value)] += 1
        cell[-1] += value

    def render(self, out: list[str]) -> None:
        out.append(f"# TYPE {self.name} histogram")
        for lv, cell in self.cells.items():
            labels = ",".join(f'{k}="{_esc(x)}"' for k, x in zip(self.labels, lv, strict=False))
            prefix = f"{self.name}_bucket{{{labels}{',' if labels else ''}"
            total = 0
            for i in range(len(self.limits) + 1):
                total += int(cell[i])
                le = _fmt(self.limits[i]) if i < len(self.limits) else "+Inf"
                out.append(f'{prefix}le="{le}"}} {total}')
            out.append(f"{self.name}_sum{{{labels}}} {_fmt(cell[-1])}")
            out.append(f"{self.name}_count{{{labels}}} {total}")


class Metrics:
    def __init__(self) -> None:
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
        return "\n".join(out) + "\n"
