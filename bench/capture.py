"""What router-side payload capture costs: rps through HAProxy with capture off, at 1% and at 100%.

The docker runtime's router config (orchestrator.router.capture) run by a local HAProxy in front of
one `tfs-model-server` that does not log (as `tensorflow/serving` cannot), with the capture agent
(orchestrator.router.capture_agent) as the docker runtime starts it. The model is the serving
benches' Keras MLP (784 floats in, 10 scores out). Each round starts a fresh router (and agent)
per setting, rotating which goes first, and loads it with wrk (REST) and an asyncio gRPC
generator; rps is the mean over rounds, and the ratio to "off" per round (paired) with its median.
Goals as for the server's own logging: 1% >= 0.95x off, 100% >= 0.8x off. Also prints, at 100%,
how many samples were written, dropped by the agent, and not delivered (counted by the router),
and the agent's CPU time per request (from /proc; median of rounds), which moves much less than
rps on a shared machine.

    .venv/bin/python bench/capture.py [--duration 5] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
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
from orchestrator.router import capture_agent  # noqa: E402
from orchestrator.router.capture import SPOE_FILE, CaptureConfig, CaptureModel  # noqa: E402
from orchestrator.router.haproxy import (  # noqa: E402
    HAProxyRouter,
    RouterConfig,
    Upstream,
    wait_until_routed,
)
from orchestrator.runtime.base import free_port  # noqa: E402

SETTINGS = {"off": None, "1%": 0.01, "100%": 1.0}


@contextlib.contextmanager
def routed(work: Path, key: str, rate: float | None, srv, base: Path) -> Iterator[tuple[str, str, str, int]]:  # type: ignore[no-untyped-def]
    """A router (and agent) for one setting: (REST URL, gRPC target, agent metrics URL, agent
    pid or 0)."""
    folder = work / f"router-{key.rstrip('%')}"
    if folder.exists():
        shutil.rmtree(folder)
    router = HAProxyRouter(folder)
    capture = None
    metrics = ""
    pid = 0
    if rate is not None:
        settings = capture_agent.Settings(
            deployment=MODEL, main=MODEL, spoa_port=free_port(), metrics_port=free_port(),
            admin_socket=router.socket_path, models_config=str(work / "none"), grpc_rate=rate,
            models={MODEL: capture_agent.ModelSettings(
                name=MODEL, sample=rate, prefix=str(work / f"logs-{key.rstrip('%')}" / MODEL),
                max_bytes=256 << 20, base_path=str(base))})
        folder.mkdir(parents=True)
        pid = int(capture_agent.start_agent(folder, settings, deadline_s=600)["pid"])
        capture = CaptureConfig(models=(CaptureModel(MODEL, rate),), agent_port=settings.spoa_port,
                                spoe_path=str(folder / SPOE_FILE))
        metrics = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    rest, grpc = free_port(), free_port()
    config = RouterConfig(name=MODEL, model=MODEL, rest_port=rest, grpc_port=grpc,
                          stable=(Upstream(grpc_port=srv.grpc_port, rest_port=srv.rest_port),),
                          stable_version=1, capture=capture)
    try:
        router.start(config)
        wait_until_routed(router, 1, deadline_s=60)
        yield f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc}", metrics, pid
    finally:
        router.stop()
        capture_agent.stop_agent(folder)


def _counter(page: str, name: str, reason: str | None = None) -> float:
    label = f'[^}}]*reason="{reason}"[^}}]*' if reason else "[^}]*"
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}\{{{label}\}} (\S+)$", page, re.M))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    require("wrk", "haproxy")
    row, body = mlp_row(), mlp_body()
    work = Path(tempfile.mkdtemp(prefix="bench-capture-"))
    base = export_mlp(work / MODEL)
    keys = list(SETTINGS)
    totals = {k: {"rest": 0.0, "grpc": 0.0} for k in keys}
    ratios = {k: {"rest": [], "grpc": []} for k in keys if k != "off"}  # type: ignore[var-annotated]
    agent_us = {k: {"rest": [], "grpc": []} for k in keys if k != "off"}  # type: ignore[var-annotated]
    written = dropped = lost = 0.0
    try:
        with server([f"--model_name={MODEL}", f"--model_base_path={base}"]) as srv:
            srv.wait_until_available(MODEL)
            for i in range(args.rounds):
                order = keys[i % 3:] + keys[: i % 3]
                this: dict[str, dict[str, float]] = {k: {} for k in keys}
                for key in order:
                    with routed(work, key, SETTINGS[key], srv, base) as (rest, grpc, metrics, pid):
                        url = f"{rest}/v1/models/{MODEL}:predict"
                        warm(url, body)
                        c0 = cpu_seconds(pid) if pid else 0.0
                        this[key]["rest"] = wrk(url, body, duration=args.duration,
                                                connections=args.connections)["rps"]
                        if pid:
                            agent_us[key]["rest"].append((cpu_seconds(pid) - c0) * 1e6
                                                         / (this[key]["rest"] * args.duration))
                        asyncio.run(grpc_load(grpc, row, duration=1, concurrency=args.connections))
                        c0 = cpu_seconds(pid) if pid else 0.0
                        this[key]["grpc"] = asyncio.run(grpc_load(
                            grpc, row, duration=args.duration, concurrency=args.connections))["rps"]
                        if pid:
                            agent_us[key]["grpc"].append((cpu_seconds(pid) - c0) * 1e6
                                                         / (this[key]["grpc"] * args.duration))
                        if key == "100%":
                            page = urllib.request.urlopen(metrics, timeout=10).read().decode()
                            written += _counter(page, "tfso_prediction_log_records_total")
                            lost += _counter(page, "tfso_prediction_log_dropped_total", "not_delivered")
                            dropped += _counter(page, "tfso_prediction_log_dropped_total") - \
                                _counter(page, "tfso_prediction_log_dropped_total", "not_delivered")
                    for proto in ("rest", "grpc"):
                        totals[key][proto] += this[key][proto]
                for key in ratios:
                    for proto in ("rest", "grpc"):
                        ratios[key][proto].append(this[key][proto] / this["off"][proto])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nKeras MLP 784-256-10 behind HAProxy, one-row requests, {args.connections} connections, "
          f"{args.rounds} rounds x {args.duration}s per setting and protocol, {os.cpu_count()} CPUs, "
          f"load average {load_average()}\n")
    print("| protocol | capture | rps | vs off (means) | vs off (median of rounds) | per round | goal "
          "| agent CPU µs / request |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- | ---: |")
    for proto in ("rest", "grpc"):
        off = totals["off"][proto] / args.rounds
        print(f"| {proto} | off | {off:.0f} | 1.000 | | | | |")
        for key, goal in (("1%", 0.95), ("100%", 0.8)):
            rps = totals[key][proto] / args.rounds
            rs = ratios[key][proto]
            print(f"| {proto} | {key} | {rps:.0f} | {rps / off:.3f} | {median(rs):.3f} | "
                  f"{' '.join(f'{r:.2f}' for r in rs)} | >= {goal} | {median(agent_us[key][proto]):.0f} |")
            summary("capture", f"{proto} rps through the router, capture {key} / off (median of rounds)",
                    median(rs), f"≥ {goal}×")  # fmt: skip
    print(f"\nat 100%: {written:.0f} records written, {dropped:.0f} dropped by the agent "
          f"(queue full, write error, unparsable), {lost:.0f} not delivered (counted by the router)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
