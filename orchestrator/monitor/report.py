"""`tfsctl monitor report`: rps, error ratio and latency percentiles per version over time.

Read from the deployment's Prometheus (range queries over the time asked for), drawn with
matplotlib as a PNG, or as one self-contained HTML page (the PNG inline, tables of events and of
each version's totals). Deploy/reload events (events.jsonl) and the last rollout's phases are
marked as vertical lines. The numbers are written beside the output as JSON.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from orchestrator.monitor import MonitorError
from orchestrator.monitor.events import Event, read
from orchestrator.state import StateStore, write_atomic

_SINCE = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)")


def parse_since(text: str) -> float:
    match = _SINCE.fullmatch(text.strip())
    if not match:
        raise MonitorError(f"--since {text!r} is not a duration", fix="use e.g. 90s, 30m, 1h or 2d")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@dataclass(frozen=True)
class Series:
    what: str  # rps | error_ratio | p50 | p95 | p99
    version: str
    points: list[tuple[float, float]]  # (unix time, value); NaN dropped


def queries(model: str, window: str) -> dict[str, str]:
    sel = f'{{model="{model}"}}'
    by = "version"
    out = {
        "rps": f"sum by ({by}) (rate(tfso_requests_total{sel}[{window}]))",
        "error_ratio": f"(sum by ({by}) (rate(tfso_request_errors_total{sel}[{window}])) or "
                       f"sum by ({by}) (rate(tfso_requests_total{sel}[{window}])) * 0) / "
                       f"sum by ({by}) (rate(tfso_requests_total{sel}[{window}]))",
    }
    for q in ("50", "95", "99"):
        out[f"p{q}"] = (f"histogram_quantile(0.{q}, sum by ({by}, le) "
                        f"(rate(tfso_request_duration_seconds_bucket{sel}[{window}])))")
    return out


def fetch(url: str, model: str, window: str, start: float, end: float) -> list[Series]:
    step = max(1.0, (end - start) / 500)
    out = []
    for what, expr in queries(model, window).items():
        try:
            params: dict[str, str | float] = {"query": expr, "start": start, "end": end,
                                              "step": step}
            resp = requests.get(f"{url}/api/v1/query_range", timeout=30, params=params)
            resp.raise_for_status()
            result = resp.json()["data"]["result"]
        except (requests.RequestException, ValueError, KeyError) as exc:
            raise MonitorError(f"Prometheus at {url} did not answer a range query: {exc}",
                               fix="check `tfsctl monitor status NAME`") from exc
        for r in result:
            version = r["metric"].get("version", "")
            if not version:
                continue
            points = [(float(t), float(v)) for t, v in r["values"] if not math.isnan(float(v))]
            out.append(Series(what, version, points))
    return out


def rollout_events(store: StateStore, name: str, since: float) -> list[Event]:
    """The last rollout's start, phase changes and end, from its persisted status."""
    from orchestrator.rollout.manager import RolloutStore

    status = RolloutStore(store).load(name)
    if status is None:
        return []
    events = [Event(status.started_at, f"rollout start v{status.from_version}→v{status.to_version}")]
    phase = ""
    for record in status.history:
        if record.phase != phase or record.decision in ("promote", "rollback", "fail"):
            events.append(Event(record.at, f"rollout {record.phase} at {record.weight}%"
                                           + (f": {record.decision}" if record.decision else "")))
            phase = record.phase
    if status.terminal:
        events.append(Event(status.updated_at, f"rollout {status.phase.value}"))
    return [e for e in events if e.time >= since]


def build(store: StateStore, name: str, model: str, url: str, window: str, since_s: float,
          *, now: float | None = None) -> dict[str, Any]:
    end = time.time() if now is None else now
    start = end - since_s
    series = fetch(url, model, window, start, end)
    events = sorted(read(store, name, start) + rollout_events(store, name, start),
                    key=lambda e: e.time)
    return {"name": name, "model": model, "start": start, "end": end, "window": window,
            "series": [{"what": s.what, "version": s.version, "points": s.points} for s in series],
            "events": [{"time": e.time, "what": e.what} for e in events]}


def _png(data: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = data["start"]
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    panels = [("rps", "requests / s", ["rps"]), ("errors", "error ratio", ["error_ratio"]),
              ("latency", "latency (ms)", ["p50", "p95", "p99"])]
    styles = {"p50": ":", "p95": "--", "p99": "-", "rps": "-", "error_ratio": "-"}
    for ax, (_, label, whats) in zip(axes, panels, strict=True):
        for s in data["series"]:
            if s["what"] not in whats or not s["points"]:
                continue
            xs = [t - start for t, _ in s["points"]]
            scale = 1000.0 if s["what"].startswith("p") else 1.0
            ys = [v * scale for _, v in s["points"]]
            name = f"v{s['version']}" + (f" {s['what']}" if len(whats) > 1 else "")
            ax.plot(xs, ys, styles[s["what"]], label=name)
        for e in data["events"]:
            ax.axvline(e["time"] - start, color="grey", linewidth=0.8, alpha=0.7)
        ax.set_ylabel(label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize="small")
    for e in data["events"]:
        axes[0].annotate(e["what"], (e["time"] - start, 1.0), xycoords=("data", "axes fraction"),
                         rotation=90, fontsize=7, va="top", ha="right", color="dimgrey")
    axes[-1].set_xlabel(f"seconds since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(start))}")
    fig.suptitle(f"{data['name']}: per-version rps, errors and latency (rate window {data['window']})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _html(data: dict[str, Any], png: bytes) -> str:
    def fmt_time(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    rows = "".join(f"<tr><td>{fmt_time(e['time'])}</td><td>{html.escape(e['what'])}</td></tr>"
                   for e in data["events"]) or "<tr><td colspan=2>none</td></tr>"
    summary = []
    for s in data["series"]:
        values = [v for _, v in s["points"]]
        if values:
            summary.append(f"<tr><td>v{html.escape(s['version'])}</td><td>{s['what']}</td>"
                           f"<td>{min(values):.4g}</td><td>{sum(values) / len(values):.4g}</td>"
                           f"<td>{max(values):.4g}</td></tr>")
    title = html.escape(f"{data['name']}: monitoring report")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>{fmt_time(data['start'])} to {fmt_time(data['end'])}, "
            f"rate window {html.escape(data['window'])}</p>"
            f"<img alt='per-version rps, error ratio and latency' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            f"<h2>Events</h2><table border=1><tr><th>time</th><th>event</th></tr>{rows}</table>"
            f"<h2>Per version</h2><table border=1><tr><th>version</th><th>series</th><th>min</th>"
            f"<th>mean</th><th>max</th></tr>{''.join(summary)}</table></body></html>\n")


def write(data: dict[str, Any], out: Path) -> Path:
    """Write out (.png or .html) and out.json beside it; returns the JSON's path."""
    suffix = out.suffix.lower()
    if suffix not in (".png", ".html"):
        raise MonitorError(f"--out {out}: the report is a .png or an .html file",
                           fix="name the output report.png or report.html")
    png = _png(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_bytes(png)
        tmp.replace(out)
    else:
        write_atomic(out, _html(data, png))
    beside = out.with_suffix(out.suffix + ".json")
    write_atomic(beside, json.dumps(data, indent=1) + "\n")
    return beside
