"""Prometheus's own scrape of our server under REST load, as Prometheus itself records it.

A real Prometheus (Debian's `prometheus`) scrapes our server's metrics page every 200 ms and
keeps, per scrape, `scrape_duration_seconds` (from the start of the request until the page is
read, parsed and stored) and `up` (0 when the scrape failed or timed out). Each round runs the
REST load of bench/cpu.py (wrk, one thread, 16 connections; one-row predicts of the MLP, or of
bench/cpu.py's demo model with `--model demo`) in three phases of `--seconds` each, in an order
that alternates round by round:

- no scraping (Prometheus has no target): the rps to compare against;
- Prometheus alone;
- Prometheus alone against a second server, started beside the first with TFS_SCRAPE_THREAD=0,
  whose scrapes all stay on the event loop (the way before the scrape thread), under the same load;
- Prometheus alone against a third server whose scrape thread keeps Python's default GIL switch
  interval (TFS_SWITCH_INTERVAL_MS=5 instead of 0.5).

`--python` adds a phase with Prometheus and the Python scraper of bench/cpu.py `--scrape`
(http.client on a kept-alive connection every 100 ms, timed in a thread of this process).

After each phase every sample of the phase's window is read back through Prometheus's HTTP API
(a range selector returns the raw samples). Percentiles are over the samples of all rounds
pooled (one round holds only about 100 Prometheus scrapes, whose p99 would be its maximum); rps
is the median of the rounds. One idle phase first (no load) is the reference. The server is
pinned to core 0 like bench/cpu.py's; wrk and Prometheus run on core 1.

    .venv/bin/python bench/scrape.py [--rounds 3] [--seconds 20] [--idle-seconds 10]
        [--model mlp|demo] [--connections 16] [--interval-ms 200] [--timeout-ms 150] [--python]

The three servers run side by side, each pinned to the same core, and only the one in the phase
gets load; "vs no scraping" compares every phase with the first server's rps without scraping.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import _common as common  # noqa: E402
from bench import ceiling  # noqa: E402
from bench.cpu import LOAD_CORE, PROM, SERVER_CORE, wrk_n  # noqa: E402
from orchestrator.launch import ENV as LAUNCHER_ENV  # noqa: E402
from tests.helpers import server as helpers  # noqa: E402
from tests.helpers.launcher import terminate  # noqa: E402
from tests.helpers.server import ServerProcess, free_port, wait_until  # noqa: E402

JOB = "replica"
SETUP = "bash scripts/setup_system.sh (installs wrk and Debian's prometheus package)"
PHASES = {
    "none": (False, False, "thread"),  # (Prometheus scrapes, Python scraper runs, which server)
    "prometheus": (True, False, "thread"),
    "loop": (True, False, "loop"),
    "switch5": (True, False, "switch5"),
}
PYTHON_PHASE = {"both": (True, True, "thread")}
LABELS = {
    "idle": "idle: Prometheus + Python",
    "none": "load: no scraping",
    "prometheus": "load: Prometheus alone",
    "both": "load: Prometheus + Python",
    "loop": "load: Prometheus alone, scrapes on the event loop (TFS_SCRAPE_THREAD=0)",
    "switch5": "load: Prometheus alone, scrape thread with a 5 ms GIL switch interval",
}
SERVER_ENV = {
    "thread": {},
    "loop": {"TFS_SCRAPE_THREAD": "0"},
    "switch5": {"TFS_SWITCH_INTERVAL_MS": "5"},
}


def require_tools() -> None:
    for tool in ("prometheus", "promtool", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"error: {tool} is not installed\nfix: {SETUP}")
    common.require("taskset")


def prometheus_yaml(targets_file: Path, interval_ms: int, timeout_ms: int) -> str:
    """One job scraping the targets listed in `targets_file` (empty list: no scraping)."""
    return (
        "global:\n"
        f"  scrape_interval: {interval_ms}ms\n"
        f"  scrape_timeout: {timeout_ms}ms\n"
        "  evaluation_interval: 10s\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        f"    metrics_path: {PROM}\n"
        "    file_sd_configs:\n"
        f"      - files: [{json.dumps(str(targets_file))}]\n"
        "        refresh_interval: 1s\n"
    )


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (as bench/cpu.py takes it); NaN for no samples."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


class Prometheus:
    """A Prometheus process on a free 127.0.0.1 port with its own data folder; a context manager."""

    def __init__(self, work: Path, interval_ms: int, timeout_ms: int) -> None:
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = work / "targets.json"
        self.interval_ms = interval_ms
        self.log_path = work / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.set_targets_file([])
        config = work / "prometheus.yml"
        config.write_text(prometheus_yaml(self.targets, interval_ms, timeout_ms))
        out = subprocess.run(["promtool", "check", "config", str(config)],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        if out.returncode:
            raise SystemExit(f"error: promtool rejects the bench's prometheus.yml:\n"
                             f"{out.stdout}{out.stderr}fix: report this as a bug")  # fmt: skip
        self.args = [f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}"]  # fmt: skip

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def __enter__(self) -> Prometheus:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["taskset", "-c", LOAD_CORE, "prometheus", *self.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_until(self._ready, timeout_s=60, what=f"Prometheus ready on {self.url}",
                       logs=self.log_tail)  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise helpers.ServerExited(
                f"Prometheus exited with {self.proc.returncode}:\n{self.log_tail()}"
            )
        with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
            return resp.status == 200

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            terminate(self.proc, 30)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.loads(resp.read())
        if doc.get("status") != "success":
            raise RuntimeError(f"Prometheus API {path}: {doc}")
        return doc["data"]

    def set_targets_file(self, addresses: list[str]) -> None:
        groups = [{"targets": addresses, "labels": {}}] if addresses else []
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets)

    def set_target(self, address: str | None) -> None:
        """Scrape `address` (or nothing), and wait until Prometheus does: with a first scrape done
        after the change, or with no target left (the scrape manager applies changes every 5 s)."""
        before = time.time()
        self.set_targets_file([address] if address else [])

        def applied() -> bool:
            if address is None:
                return not self.api("targets", state="active")["activeTargets"]
            found = self.api("query", query=f'timestamp(up{{job="{JOB}",instance="{address}"}})')
            return any(float(r["value"][1]) > before for r in found["result"])

        wait_until(applied, timeout_s=60, interval_s=0.2,
                   what=f"Prometheus to {'scrape ' + address if address else 'drop its target'}",
                   logs=self.log_tail)  # fmt: skip

    def samples(self, metric: str, start: float, end: float) -> list[float]:
        """Every raw sample of `metric` for our job taken in [start, end] (unix seconds)."""
        span = math.ceil(end - start) + 2
        data = self.api("query", query=f'{metric}{{job="{JOB}"}}[{span}s]', time=f"{end:.3f}")
        out = []
        for series in data["result"]:
            for ts, value in series["values"]:
                v = float(value)
                if start <= float(ts) <= end and not math.isnan(v):
                    out.append(v)
        return out


def phase(prom: Prometheus, srv: ServerProcess, url: str, body_file: Path, *,
          scrape: bool, python: bool, load: bool, seconds: int, connections: int,
          interval_ms: int) -> dict[str, Any]:  # fmt: skip
    """One phase: `seconds` of wrk (or of idling) while the chosen scrapers run."""
    prom.set_target(f"127.0.0.1:{srv.rest_port}" if scrape else None)
    scraper = common.Scraper(srv.rest_url + PROM) if python else None
    if scraper is not None:
        scraper.start()
    start = time.time()
    rps = float("nan")
    if load:
        rps = wrk_n(url, str(body_file), seconds=seconds, connections=connections)["rps"]
    else:
        time.sleep(seconds)
    end = time.time()
    out: dict[str, Any] = {"rps": rps}
    if scraper is not None:
        scraper.stop.set()
        scraper.join(10)
        out["python_ms"] = list(scraper.times_ms)
    if scrape:
        time.sleep(2 * interval_ms / 1e3)  # the scrape begun before `end` is stored
        out["prom_ms"] = [v * 1e3 for v in prom.samples("scrape_duration_seconds", start, end)]
        up = prom.samples("up", start, end)
        out["scrapes"] = len(up)
        out["failed"] = sum(1 for v in up if v == 0)
        out["expected"] = round((end - start) * 1e3 / interval_ms)
    return out


def fmt(x: float, digits: int = 1) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", choices=("mlp", "demo"), default="mlp",
                    help="the MLP (784 floats a request) or bench/cpu.py's demo model (4 floats)")
    ap.add_argument("--seconds", type=int, default=20, help="REST load per phase (wrk)")
    ap.add_argument("--idle-seconds", type=int, default=10, help="the idle reference phase")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--interval-ms", type=int, default=200, help="Prometheus's scrape_interval")
    ap.add_argument("--timeout-ms", type=int, default=150, help="Prometheus's scrape_timeout")
    ap.add_argument("--python", action="store_true",
                    help="also a phase with the Python scraper beside Prometheus")
    args = ap.parse_args()
    phases = {**PHASES, **(PYTHON_PHASE if args.python else {})}
    if not 0 < args.timeout_ms <= args.interval_ms:
        raise SystemExit("error: --timeout-ms must be positive and at most --interval-ms\n"
                         "fix: e.g. --interval-ms 200 --timeout-ms 150")  # fmt: skip
    require_tools()
    work = Path(tempfile.mkdtemp(prefix="bench-scrape-"))
    pooled: dict[str, dict[str, list[float]]] = {
        k: {"rps": [], "prom_ms": [], "python_ms": [], "scrapes": [], "failed": [], "expected": []}
        for k in ("idle", *phases)
    }
    load_start = common.load_average()
    page_kb = float("nan")
    model = common.MLP if args.model == "mlp" else ceiling.MODEL
    try:
        if args.model == "mlp":
            base = common.export_mlp(work / model)
            body = common.mlp_body()
        else:
            base = ceiling.export_demo(work / model)
            body = json.dumps({"instances": [ceiling.ROW]})
        (work / "monitoring.config").write_text(f'prometheus_config {{ enable: true path: "{PROM}" }}\n')
        (work / "rest.json").write_text(body)
        helpers.SERVER_CMD = ["taskset", "-c", SERVER_CORE, *helpers.SERVER_CMD]
        server_args = [f"--model_name={model}", f"--model_base_path={base}",
                       f"--monitoring_config_file={work / 'monitoring.config'}"]  # fmt: skip
        # No preloaded launcher: its forked server would not run under taskset.
        (work / "prom").mkdir()
        with contextlib.ExitStack() as stack:
            servers = {key: stack.enter_context(ServerProcess(server_args, env={LAUNCHER_ENV: "", **env}))
                       for key, env in SERVER_ENV.items()}  # fmt: skip
            srv = servers["thread"]
            prom = stack.enter_context(Prometheus(work / "prom", args.interval_ms, args.timeout_ms))
            for each in servers.values():
                each.wait_until_available(model)
                warm = f"{each.rest_url}/v1/models/{model}:predict"
                wrk_n(warm, str(work / "rest.json"), seconds=2, connections=args.connections)
            url = f"{srv.rest_url}/v1/models/{model}:predict"
            kw = {"body_file": work / "rest.json", "seconds": args.seconds,
                  "connections": args.connections, "interval_ms": args.interval_ms}
            results = [("idle", phase(prom, srv, url, scrape=True, python=True, load=False,
                                      **{**kw, "seconds": args.idle_seconds}))]  # fmt: skip
            print("idle: " + json.dumps(brief(results[-1][1])), file=sys.stderr)
            for rnd in range(args.rounds):
                for name in sorted(phases, reverse=rnd % 2 == 1):
                    scrape, python, which = phases[name]
                    target = servers[which]
                    row = phase(prom, target, f"{target.rest_url}/v1/models/{model}:predict",
                                scrape=scrape, python=python, load=True, **kw)  # fmt: skip
                    results.append((name, row))
                    print(f"round {rnd} {name}: " + json.dumps(brief(row)), file=sys.stderr)
            with urllib.request.urlopen(srv.rest_url + PROM, timeout=10) as resp:
                page_kb = len(resp.read()) / 1024  # at the end: every label set has appeared
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, row in results:
        for key, value in row.items():
            pooled[name][key] += value if isinstance(value, list) else [value]
    print(f"\n{'MLP' if args.model == 'mlp' else 'Demo model'}, REST load from wrk (1 thread, {args.connections} connections, {args.seconds} s a "
          f"phase, {args.rounds} rounds); server on core {SERVER_CORE}, wrk and Prometheus on core "
          f"{LOAD_CORE}; Prometheus scrapes every {args.interval_ms} ms (timeout "
          f"{args.timeout_ms} ms), the Python scraper every 100 ms on a kept-alive connection; "
          f"metrics page {page_kb:.0f} KB; scrape times in ms, all rounds' samples pooled; rps the "
          f"median of rounds; load average {load_start} at the start, {common.load_average()} at "
          f"the end\n")  # fmt: skip
    print("| phase | rps | vs no scraping | Prometheus scrapes (failed) | Prometheus p50 / p99 / max "
          "| Python scrapes | Python p50 / p99 / max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    base_rps = statistics.median(pooled["none"]["rps"]) if pooled["none"]["rps"] else float("nan")
    for name, p in pooled.items():
        rps = statistics.median(p["rps"]) if p["rps"] and name != "idle" else float("nan")
        prom_ms, py_ms = p["prom_ms"], p["python_ms"]
        prom_cell = (f"{sum(p['scrapes']):.0f} of {sum(p['expected']):.0f} ({sum(p['failed']):.0f})"
                     if p["scrapes"] else "-")  # fmt: skip
        print(f"| {LABELS[name]} | {fmt(rps, 0)} | "
              f"{'-' if name in ('idle', 'none') else fmt(rps / base_rps, 2) + '×'} | {prom_cell} | "
              f"{triple(prom_ms)} | {len(py_ms) or '-'} | {triple(py_ms)} |")  # fmt: skip
    under = pooled["prometheus"]
    common.summary("scrape", "Prometheus scrape_duration_seconds p50 under REST load",
                   pct(under["prom_ms"], 0.5), "< 5 ms", unit=" ms")  # fmt: skip
    common.summary("scrape", "Prometheus scrape_duration_seconds p99 under REST load",
                   pct(under["prom_ms"], 0.99), "< 5 ms", unit=" ms")  # fmt: skip
    common.summary("scrape", "Prometheus scrapes failed under REST load (up == 0)",
                   float(sum(under["failed"])), "0", unit="")  # fmt: skip
    common.summary("scrape", "the same p99 with every scrape on the event loop (before)",
                   pct(pooled["loop"]["prom_ms"], 0.99), unit=" ms")  # fmt: skip
    if args.python:
        common.summary("scrape", "Python client's scrape p99 beside Prometheus, same load",
                       pct(pooled["both"]["python_ms"], 0.99), unit=" ms")  # fmt: skip
    return 0


def triple(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{fmt(pct(xs, 0.5))} / {fmt(pct(xs, 0.99))} / {fmt(max(xs))}"


def brief(row: dict[str, Any]) -> dict[str, Any]:
    """A phase's numbers for the progress lines (percentiles instead of the samples)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, list):
            out[key] = [round(pct(value, 0.5), 2), round(pct(value, 0.99), 2), len(value)]
        else:
            out[key] = round(value, 1) if isinstance(value, float) else value
    return out


if __name__ == "__main__":
    sys.exit(main())
