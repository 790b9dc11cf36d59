"""A rollout as a picture: weight, request rate, error rate and p99 per analysis, decisions marked.

Each judged panel draws the threshold it was judged against (request rate: the minimum for a
verdict; error rate; p99 when set); a p99 panel with no successful canary request says so rather
than showing an empty axis. The JSON behind the PNG is written beside it, with the counters'
source per row, so the numbers can be checked or re-plotted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.rollout.machine import Status
from orchestrator.state import write_atomic


def report_rows(status: Status) -> list[dict[str, object]]:
    rows = []
    previous_at = status.started_at
    for record in status.history:
        span = max(record.at - previous_at, 1e-9)
        rows.append({
            "t_s": round(record.at - status.started_at, 3),
            "phase": record.phase,
            "weight": record.weight,
            "requests": record.requests,
            "request_rate": round(record.requests / span, 2) if record.requests else 0.0,
            "error_rate": record.error_rate,
            "p99_ms": record.p99_ms,
            "source": record.source,
            "drift_psi": record.drift_psi,
            "agreement": record.agreement,
            "decision": record.decision,
            "reason": record.reason,
        })
        previous_at = record.at
    return rows


def thresholds(status: Status) -> dict[str, tuple[float, str]]:
    """Per panel key: the line it was judged against, and its legend."""
    t = status.thresholds
    out = {"error_rate": (t.max_error_rate, f"max error rate {t.max_error_rate:.2%}")}
    if status.interval_s > 0 and t.min_requests > 0:
        out["request_rate"] = (t.min_requests / status.interval_s,
                               f"min {t.min_requests} requests per {status.interval_s:g} s check")
    if t.max_latency_p99_ms is not None:
        out["p99_ms"] = (t.max_latency_p99_ms, f"max p99 {t.max_latency_p99_ms:g} ms")
    return out


def no_successful_requests(rows: list[dict[str, object]]) -> bool:
    """Canary traffic was measured, yet no row has a latency: every canary request failed."""
    measured = [r for r in rows if r["requests"]]
    return bool(measured) and all(r["p99_ms"] is None for r in measured)


def write_report(status: Status, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report_rows(status)
    json_path = png.with_suffix(".json")
    write_atomic(json_path, json.dumps({"rollout": status.to_json(), "rows": rows}, indent=2) + "\n")
    fig = draw(status, rows)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png)
    return json_path


def draw(status: Status, rows: list[dict[str, object]]) -> Any:
    """The report's matplotlib figure (4 panels sharing the time axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
    series = [("canary weight %", "weight"), ("canary req/s", "request_rate"),
              ("canary error rate", "error_rate"), ("canary p99 ms", "p99_ms")]
    limits = thresholds(status)
    for ax, (label, key) in zip(axes, series, strict=True):
        values = [r[key] if r[key] is not None else float("nan") for r in rows]
        ax.step(t, values, where="post", marker="o")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        limit = limits.get(key)
        if limit is not None:
            ax.axhline(limit[0], color="orange", linestyle=":", linewidth=1.5, label=limit[1])
            ax.legend(loc="upper left", fontsize=8)
    if no_successful_requests(rows):
        axes[3].text(0.5, 0.5, "no successful requests: no latency to show", transform=axes[3].transAxes,
                     ha="center", va="center", fontsize=11, color="red")
    for r in rows:
        if r["decision"] in ("promote", "roll back", "succeeded", "failed", "aborted") or str(r["decision"]).startswith("check failed"):
            colour = "green" if r["decision"] in ("promote", "succeeded") else "red"
            for ax in axes:
                ax.axvline(r["t_s"], color=colour, alpha=0.5, linestyle="--")
            axes[0].annotate(str(r["decision"]), (r["t_s"], 100), fontsize=8, rotation=90, va="top", color=colour)
    axes[-1].set_xlabel("seconds since start")
    fig.suptitle(f"{status.name}: v{status.from_version} → v{status.to_version} — {status.phase.value}")
    fig.tight_layout()
    return fig
