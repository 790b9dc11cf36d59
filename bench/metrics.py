"""What per-version metrics cost: tfs-model-server with `tfso_*` metrics on vs off, in one run.

The same model (Keras MLP 784 -> 256 -> 10, monitoring on) served with TFS_VERSION_METRICS=1 and
=0. Each round starts a fresh server for each setting in turn (alternating which goes first) and
loads it from outside Python, as the speed issue measures: the server pinned to core 0, wrk (REST,
for --duration seconds) and then h2load (gRPC, a fixed count of prebuilt Predict calls) pinned to
core 1. rps is the mean over rounds, and since the machine's other load varies, the on/off ratio
is also given per round (paired runs) with its median. While a server is under REST load, a
thread scrapes its metrics page every 100 ms, as Prometheus would, and times each scrape.
Prints a markdown table with rps on/off and the scrape times (goal: ratio >= 0.97, scrape < 5 ms),
and the server's CPU time per request (all its threads, from /proc; median of rounds), which moves
much less than rps when other jobs share the machine.

    .venv/bin/python bench/metrics.py [--duration 5] [--requests 8000] [--rounds 6] [--connections 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench._common import MLP as MODEL  # noqa: E402
from bench._common import (  # noqa: E402
    Scraper,
    cpu_seconds,
    export_mlp,
    grpc_frame,
    mlp_body,
    mlp_request,
    mlp_row,
    require,
    server,
    summary,
    warm,
    wrk,
)
from bench._common import median as median_of  # noqa: E402
from bench.cpu import GRPC_PATH, LOAD_CORE, SERVER_CORE, h2load_n  # noqa: E402
from tests.helpers import server as helpers  # noqa: E402

PATH = "/monitoring/prometheus/metrics"


def bookkeeping_us(on: bool, n: int = 200_000) -> float:
    """In-process µs a request spends on the server's call bookkeeping (begin + end), per-version
    metrics on or off: the exact cost that the rps rounds are too noisy to resolve."""
    from orchestrator.server.metrics import Metrics

    m = Metrics(version_metrics=on)
    t0 = time.perf_counter()
    for _ in range(n):
        call = m.begin(MODEL, "predict", "grpc", "rid")
        call.version, call.signature = "1", "serving_default"
        m.end(call, "OK", t0)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--requests", type=int, default=8000, help="gRPC calls per server and round")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="worker processes per server")
    args = ap.parse_args()
    require("wrk", "h2load", "taskset")
    row, body = mlp_row(), mlp_body()
    work = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    helpers.SERVER_CMD = ["taskset", "-c", SERVER_CORE, *helpers.SERVER_CMD]
    (work / "predict.grpc").write_bytes(grpc_frame(mlp_request(row)))
    base = export_mlp(work / MODEL)
    (work / "monitoring.config").write_text(f'prometheus_config {{ enable: true path: "{PATH}" }}\n')
    common = [f"--model_name={MODEL}", f"--model_base_path={base}",
              f"--monitoring_config_file={work / 'monitoring.config'}"]
    totals = {key: {"rest": 0.0, "grpc": 0.0} for key in ("on", "off")}
    ratios: dict[str, list[float]] = {"rest": [], "grpc": []}  # on/off, per round (paired)
    scrapes: dict[str, list[float]] = {"on": [], "off": []}
    cpu_us: dict[str, dict[str, list[float]]] = {k: {"rest": [], "grpc": []} for k in ("on", "off")}
    page = b""
    try:
        for i in range(args.rounds):
            order = ["on", "off"] if i % 2 == 0 else ["off", "on"]
            this_round: dict[str, dict[str, float]] = {"on": {}, "off": {}}
            for key in order:
                # A fresh server per round and setting, so no process keeps a lucky (or unlucky)
                # placement for the whole run; only one server runs at a time.
                env = {"TFS_VERSION_METRICS": "1" if key == "on" else "0"}
                with server(common, env=env, workers=args.workers) as srv:
                    srv.wait_until_available(MODEL)
                    url = f"{srv.rest_url}/v1/models/{MODEL}:predict"
                    warm(url, body)
                    scraper = Scraper(srv.rest_url + PATH)
                    scraper.start()
                    assert srv.proc is not None
                    c0 = cpu_seconds(srv.proc.pid)
                    stats = wrk(url, body, duration=args.duration, connections=args.connections,
                                threads=1, core=LOAD_CORE)
                    used = cpu_seconds(srv.proc.pid) - c0
                    scraper.stop.set()
                    scraper.join(10)
                    scrapes[key] += scraper.times_ms
                    this_round[key]["rest"] = stats["rps"]
                    cpu_us[key]["rest"].append(used / (stats["rps"] * args.duration) * 1e6)
                    target = f"http://{srv.grpc_target}{GRPC_PATH}"
                    h2load_n(target, str(work / "predict.grpc"), requests=500,  # warm
                             connections=args.connections, rest=False)
                    c0 = cpu_seconds(srv.proc.pid)
                    g = h2load_n(target, str(work / "predict.grpc"), requests=args.requests,
                                 connections=args.connections, rest=False)
                    used = cpu_seconds(srv.proc.pid) - c0
                    if g["ok"] < args.requests:
                        print(f"warning: {args.requests - g['ok']:.0f} gRPC calls failed", file=sys.stderr)
                    this_round[key]["grpc"] = g["rps"]
                    cpu_us[key]["grpc"].append(used / max(g["ok"], 1) * 1e6)
                    if key == "on":
                        page = urllib.request.urlopen(srv.rest_url + PATH, timeout=5).read()
                for proto in ("rest", "grpc"):
                    totals[key][proto] += this_round[key][proto]
            for proto in ratios:
                ratios[proto].append(this_round["on"][proto] / this_round["off"][proto])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nKeras MLP 784-256-10, one-row requests, {args.connections} connections, {args.rounds} "
          f"rounds of {args.duration} s of wrk and {args.requests} h2load gRPC calls per server; "
          f"server on core {SERVER_CORE}, load on core {LOAD_CORE}\n")
    print("| protocol | rps, metrics on | rps, metrics off | on / off (means) | "
          "on / off (median of rounds) | per round | server CPU µs / request, on / off (medians) |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for proto in ("rest", "grpc"):
        on_rps = totals["on"][proto] / args.rounds
        off_rps = totals["off"][proto] / args.rounds
        per_round = sorted(ratios[proto])
        median = per_round[len(per_round) // 2] if len(per_round) % 2 else (
            per_round[len(per_round) // 2 - 1] + per_round[len(per_round) // 2]) / 2
        print(f"| {proto} | {on_rps:.0f} | {off_rps:.0f} | {on_rps / off_rps:.3f} | {median:.3f} | "
              f"{' '.join(f'{r:.2f}' for r in ratios[proto])} | "
              f"{median_of(cpu_us['on'][proto]):.0f} / {median_of(cpu_us['off'][proto]):.0f} |")
    print("\n| metrics page under REST load | scrapes | p50 ms | p90 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, times in scrapes.items():
        times.sort()
        if times:
            print(f"| per-version metrics {key} | {len(times)} | {times[len(times) // 2]:.2f} | "
                  f"{times[int(len(times) * 0.9)]:.2f} | {times[-1]:.2f} |")
    print(f"\npage size with per-version metrics: {len(page)} bytes")
    on_us = min(bookkeeping_us(True) for _ in range(3))
    off_us = min(bookkeeping_us(False) for _ in range(3))
    print(f"in-process bookkeeping per request (best of 3 x 200,000): {on_us:.2f} µs with per-version "
          f"metrics, {off_us:.2f} µs without: they add {on_us - off_us:.2f} µs a request")  # fmt: skip
    for proto in ("rest", "grpc"):
        off_cpu = median_of(cpu_us["off"][proto])
        summary("metrics", f"{proto}: in-process cost of per-version metrics as a share of the "
                "request's CPU (off CPU / (off CPU + added µs))",
                off_cpu / (off_cpu + on_us - off_us), "≥ 0.97×")  # fmt: skip
    for proto in ("rest", "grpc"):
        summary("metrics", f"{proto} rps, per-version metrics on / off (median of rounds)",
                sorted(ratios[proto])[len(ratios[proto]) // 2], "≥ 0.97×")  # fmt: skip
        # CPU per request off / on: the rps a saturated core would keep with the metrics on.
        summary("metrics", f"{proto} server CPU per request, metrics off / on (medians)",
                median_of(cpu_us["off"][proto]) / median_of(cpu_us["on"][proto]), "≥ 0.97×")  # fmt: skip
    on = sorted(scrapes["on"])
    if on:
        summary("metrics", f"scrape p50 under REST load, {args.workers} worker(s)",
                on[len(on) // 2], "< 5 ms", unit=" ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
