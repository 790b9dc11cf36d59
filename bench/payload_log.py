"""What payload logging costs: tfs-model-server rps with logging off, at 1% and at 100%, one run.

The same model (Keras MLP 784 -> 256 -> 10) served from a models.config rendered by the plan from a
spec with no `logging:`, `logging: {sample: 0.01}` and `logging: {sample: 1.0}`. Each round starts
a fresh server per setting (rotating which goes first) and loads it with wrk (REST) and an asyncio
gRPC generator; rps is the mean over rounds, and the ratio to "off" is also given per round
(paired runs) with its median. Goals: 1% >= 0.95x off, 100% >= 0.8x off. Also prints how many
records were written and dropped (queue full) at 100%, and the server's CPU time per request
(all its threads, from /proc; median of rounds): on a shared machine rps swings by 10 % from one
round to the next, CPU per request much less, so it tells what logging itself costs a request.
`--before DIR` adds a fourth server per round, logging at 100% with the `orchestrator` package
under DIR (e.g. `git archive BASE orchestrator | tar -x -C DIR`), compared with the same "off".

    .venv/bin/python bench/payload_log.py [--duration 5] [--rounds 4] [--connections 16] [--before DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench._common import MLP as MODEL  # noqa: E402
from bench._common import (  # noqa: E402
    cpu_seconds,
    export_mlp,
    grpc_load,
    load_average,
    median,
    mlp_body,
    mlp_row,
    require,
    server,
    summary,
    warm,
    wrk,
)
from orchestrator.plan import model_config, models_config_text  # noqa: E402
from orchestrator.spec import Spec  # noqa: E402

PATH = "/monitoring/prometheus/metrics"
SETTINGS = {"off": None, "1%": 0.01, "100%": 1.0}


def _counter(page: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}\{{[^}}]*\}} (\S+)$", page, re.M))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--before", default="", help="folder holding an orchestrator package to "
                    "compare at 100%% (e.g. the tree before a change)")
    args = ap.parse_args()
    settings = dict(SETTINGS)
    envs: dict[str, dict[str, str]] = {}
    if args.before:
        if not (Path(args.before) / "orchestrator" / "__init__.py").is_file():
            raise SystemExit(f"error: {args.before} holds no orchestrator package\n"
                             f"fix: git archive BASE orchestrator | tar -x -C {args.before}")
        settings["100% before"] = 1.0
        envs["100% before"] = {"PYTHONPATH": str(Path(args.before).resolve())}
    require("wrk")
    load_start = load_average()
    row, body = mlp_row(), mlp_body()
    work = Path(tempfile.mkdtemp(prefix="bench-payload-"))
    base = export_mlp(work / MODEL)
    (work / "monitoring.config").write_text(f'prometheus_config {{ enable: true path: "{PATH}" }}\n')
    for key, rate in settings.items():
        raw: dict = {"name": MODEL, "base_path": str(base)}
        if rate is not None:
            logs = work / f"logs-{key.replace(' ', '-')}"
            raw["logging"] = {"sample": rate, "path": str(logs), "max_mb": 256}
        (work / f"{key}.config").write_text(models_config_text([model_config(Spec.model_validate(raw))]))
    keys = list(settings)
    totals = {k: {"rest": 0.0, "grpc": 0.0} for k in keys}
    ratios = {k: {"rest": [], "grpc": []} for k in keys if k != "off"}  # type: ignore[var-annotated]
    cpu_us = {k: {"rest": [], "grpc": []} for k in keys}  # type: ignore[var-annotated]
    written = dropped = 0.0
    try:
        for i in range(args.rounds):
            order = keys[i % len(keys):] + keys[: i % len(keys)]
            this: dict[str, dict[str, float]] = {k: {} for k in keys}
            for key in order:
                common = [f"--model_config_file={work / f'{key}.config'}",
                          f"--monitoring_config_file={work / 'monitoring.config'}"]
                with server(common, env=envs.get(key)) as srv:
                    srv.wait_until_available(MODEL)
                    url = f"{srv.rest_url}/v1/models/{MODEL}:predict"
                    warm(url, body)
                    assert srv.proc is not None
                    c0 = cpu_seconds(srv.proc.pid)
                    this[key]["rest"] = wrk(url, body, duration=args.duration,
                                            connections=args.connections)["rps"]
                    used = cpu_seconds(srv.proc.pid) - c0
                    cpu_us[key]["rest"].append(used / (this[key]["rest"] * args.duration) * 1e6)
                    asyncio.run(grpc_load(srv.grpc_target, row, duration=1,
                                          concurrency=args.connections))
                    c0 = cpu_seconds(srv.proc.pid)
                    this[key]["grpc"] = asyncio.run(grpc_load(
                        srv.grpc_target, row, duration=args.duration,
                        concurrency=args.connections))["rps"]
                    used = cpu_seconds(srv.proc.pid) - c0
                    cpu_us[key]["grpc"].append(used / (this[key]["grpc"] * args.duration) * 1e6)
                    if key == "100%":
                        page = urllib.request.urlopen(srv.rest_url + PATH, timeout=5).read().decode()
                        written += _counter(page, "tfso_prediction_log_records_total")
                        dropped += _counter(page, "tfso_prediction_log_dropped_total")
                for proto in ("rest", "grpc"):
                    totals[key][proto] += this[key][proto]
            for key in ratios:
                for proto in ("rest", "grpc"):
                    ratios[key][proto].append(this[key][proto] / this["off"][proto])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nKeras MLP 784-256-10, one-row requests, {args.connections} connections, "
          f"{args.rounds} rounds x {args.duration}s per server and protocol, {os.cpu_count()} CPUs, "
          f"load average {load_average()} (at the start: {load_start})\n")
    print("| protocol | logging | rps | vs off (means) | vs off (median of rounds) | per round | goal "
          "| server CPU µs / request | vs off |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: |")
    for proto in ("rest", "grpc"):
        off = totals["off"][proto] / args.rounds
        off_us = median(cpu_us["off"][proto])
        print(f"| {proto} | off | {off:.0f} | 1.000 | | | | {off_us:.0f} | 1.000 |")
        for key, goal in (("1%", 0.95), ("100%", 0.8), ("100% before", 0.8)):
            if key not in totals:
                continue
            rps = totals[key][proto] / args.rounds
            rs = ratios[key][proto]
            us = median(cpu_us[key][proto])
            print(f"| {proto} | {key} | {rps:.0f} | {rps / off:.3f} | {median(rs):.3f} | "
                  f"{' '.join(f'{r:.2f}' for r in rs)} | >= {goal} | {us:.0f} | {us / off_us:.3f} |")
            if key != "100% before":
                summary("payload_log", f"{proto} rps, logging {key} / off (median of rounds)",
                        median(rs), f"≥ {goal}×")  # fmt: skip
    print(f"\nat 100%: {written:.0f} records written, {dropped:.0f} dropped (queue full or write error)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
