"""The quality exporter: drift and late-label accuracy as Prometheus gauges (job `quality`).

`tfsctl monitor up` starts it beside Prometheus for a deployment that logs payloads, on
127.0.0.1. A background thread recomputes every `--refresh` seconds; a scrape reads the last
result, so a scrape is cheap however big the window is:

- drift: the baseline (`.tfso/monitor/NAME/baseline.json`, re-read each time, so a baseline made
  after `monitor up` counts) against the last `--window` of the payload log, per version;
- accuracy: the last `tfsctl monitor feedback` result (`feedback.json` beside it).

    tfso_drift_psi{model,version,feature,side}           PSI against the baseline
    tfso_drift_js_distance{model,version,feature,side}   Jensen-Shannon distance (base 2)
    tfso_drift_window_rows{model,version}                rows in the window
    tfso_feedback_accuracy{model,version}                accuracy of joined rows (classification)
    tfso_feedback_mae / _rmse{model,version}             regression errors
    tfso_feedback_rows{model,version}                    joined rows
    tfso_quality_baseline_present{model}                 1 when a baseline exists
    tfso_quality_compute_seconds{model}                  how long the last computation took
    tfso_quality_errors_total{model}                     computations that failed (logged)

The deployment label comes from the scrape target, not from here.

    python -m orchestrator.monitor.exporter --model M --prefix P --folder F --port N
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from orchestrator.monitor import drift
from orchestrator.monitor.feedback import FEEDBACK_FILE

log = logging.getLogger("tfso.quality")


def _esc(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _line(name: str, labels: dict[str, Any], value: float) -> str:
    inner = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value!r}"


HELP = {
    "tfso_drift_psi": "Population stability index of a feature against the baseline.",
    "tfso_drift_js_distance": "Jensen-Shannon distance (base 2) of a feature against the baseline.",
    "tfso_drift_window_rows": "Logged rows in the drift window.",
    "tfso_feedback_accuracy": "Accuracy of predictions joined to late labels.",
    "tfso_feedback_mae": "Mean absolute error of predictions joined to late labels.",
    "tfso_feedback_rmse": "Root mean squared error of predictions joined to late labels.",
    "tfso_feedback_rows": "Predictions joined to late labels.",
    "tfso_quality_baseline_present": "1 when a drift baseline exists.",
    "tfso_quality_compute_seconds": "Seconds the last drift computation took.",
    "tfso_quality_errors_total": "Drift computations that failed.",
}


def render(model: str, window: drift.Window | None, baseline: drift.Baseline | None,
           feedback: dict[str, Any] | None, compute_s: float, errors: int) -> str:
    """The metrics page. Pure."""
    series: dict[str, list[str]] = {k: [] for k in HELP}
    if window is not None and baseline is not None:
        for version in sorted(window.columns):
            labels = {"model": model, "version": str(version)}
            series["tfso_drift_window_rows"].append(
                _line("tfso_drift_window_rows", labels, float(window.rows.get(version, 0))))
            for d in drift.drift(baseline, window.columns[version]):
                fl = {**labels, "feature": d.feature, "side": d.side}
                series["tfso_drift_psi"].append(_line("tfso_drift_psi", fl, d.psi))
                series["tfso_drift_js_distance"].append(_line("tfso_drift_js_distance", fl, d.js))
    for s in (feedback or {}).get("versions", []):
        labels = {"model": model, "version": str(s["version"])}
        if not s["rows"]:
            continue
        series["tfso_feedback_rows"].append(_line("tfso_feedback_rows", labels, float(s["rows"])))
        for key in ("accuracy", "mae", "rmse"):
            if s.get(key) is not None:
                series[f"tfso_feedback_{key}"].append(
                    _line(f"tfso_feedback_{key}", labels, float(s[key])))
    series["tfso_quality_baseline_present"].append(
        _line("tfso_quality_baseline_present", {"model": model}, float(baseline is not None)))
    series["tfso_quality_compute_seconds"].append(
        _line("tfso_quality_compute_seconds", {"model": model}, compute_s))
    series["tfso_quality_errors_total"].append(
        _line("tfso_quality_errors_total", {"model": model}, float(errors)))
    out = []
    for name, lines in series.items():
        if not lines:
            continue
        kind = "counter" if name.endswith("_total") else "gauge"
        out += [f"# HELP {name} {HELP[name]}", f"# TYPE {name} {kind}", *lines]
    return "\n".join(out) + "\n"


class Quality:
    """Recomputes the page in a thread; `page` is what a scrape gets."""

    def __init__(self, model: str, prefix: str, folder: Path, window_s: float, refresh_s: float):
        self.model, self.prefix, self.folder = model, prefix, folder
        self.window_s, self.refresh_s = window_s, refresh_s
        self.errors = 0
        self.page = render(model, None, None, None, 0.0, 0)
        self.computed = threading.Event()
        self._stop = threading.Event()

    def compute(self) -> None:
        t0 = time.perf_counter()
        baseline = None
        window = None
        try:
            if (self.folder / drift.BASELINE_FILE).exists():
                baseline = drift.load(self.folder / drift.BASELINE_FILE, self.model)
                window = drift.load_window(self.prefix, since_s=self.window_s, workers=1)
            feedback = None
            try:
                feedback = json.loads((self.folder / FEEDBACK_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
            self.page = render(self.model, window, baseline, feedback,
                               time.perf_counter() - t0, self.errors)
        except Exception:  # keep exporting; the error is a metric and a log line
            self.errors += 1
            log.exception("quality computation failed")
        self.computed.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self.compute()
            self._stop.wait(self.refresh_s)

    def stop(self) -> None:
        self._stop.set()


def serve(quality: Quality, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            body = quality.page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="drift and accuracy gauges for Prometheus")
    ap.add_argument("--model", required=True)
    ap.add_argument("--prefix", required=True, help="payload log prefix (path/NAME)")
    ap.add_argument("--folder", required=True, type=Path, help=".tfso/monitor/NAME")
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--window", type=float, default=3600.0, help="drift window, seconds")
    ap.add_argument("--refresh", type=float, default=15.0, help="seconds between computations")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    quality = Quality(args.model, args.prefix, args.folder, args.window, args.refresh)
    server = serve(quality, args.port)
    threading.Thread(target=quality.run, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        quality.stop()


if __name__ == "__main__":
    main()
