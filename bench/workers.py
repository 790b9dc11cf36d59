"""Worker processes (`--rest_api_num_threads=N`): rps with 1 and N workers, in one run.

The demo model (4 floats in, 3 out: protocol work dominates, which is what workers spread), one
server at a time on 127.0.0.1, unpinned: on a 2-core machine the load generator shares the cores.
Rounds alternate which worker count goes first. Per setting: REST with wrk (one thread, 16
connections) while a thread scrapes the Prometheus page every 100 ms (the merged page, when several
workers), then gRPC Predict with h2load (16 connections). Prints median rps, the ratio to one
worker (goal: 2 workers >= 1.3x), the server's CPU time per request (all its processes, from
/proc), RSS per worker and scrape times, with the load average at the start and the end.

    .venv/bin/python bench/workers.py [--workers 1,2] [--rounds 3] [--duration 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import _common as c
from bench.ceiling import MODEL, ROW, export_demo

PATH = "/monitoring/prometheus/metrics"


def grpc_body(path: Path) -> str:
    import numpy as np

    from orchestrator.protocol import methods as M
    from orchestrator.protocol.tensors import to_tensor_proto

    req = M.PREDICT.request()
    req.model_spec.name = MODEL
    req.inputs["features"].CopyFrom(to_tensor_proto(np.asarray([ROW], dtype=np.float32)))
    path.write_bytes(c.grpc_frame(req.SerializeToString()))
    return str(path)


def measure(srv: c.ServerProcess, body: str, grpc_file: str, args: argparse.Namespace) -> dict:
    assert srv.proc is not None
    url = f"{srv.rest_url}/v1/models/{MODEL}:predict"
    c.wrk(url, body, duration=1, connections=args.connections, threads=1)  # warm every worker
    pids = c.process_tree(srv.proc.pid)
    workers = [p for p in pids if p != srv.proc.pid] or [srv.proc.pid]
    scraper = c.Scraper(srv.rest_url + PATH)
    cpu0 = c.cpu_seconds(srv.proc.pid)
    scraper.start()
    rest = c.wrk(url, body, duration=args.duration, connections=args.connections, threads=1)
    scraper.stop.set()
    scraper.join(15)
    cpu1 = c.cpu_seconds(srv.proc.pid)
    from orchestrator.protocol import methods as M

    grpc = c.h2load(srv.grpc_target, grpc_file, duration=args.duration,
                    connections=args.connections, path=M.PREDICT.path)  # fmt: skip
    return {
        "rest": rest["rps"],
        "rest_errors": rest["errors"],
        "grpc": grpc["rps"],
        "grpc_errors": grpc["errors"],
        "cpu_us": (cpu1 - cpu0) / max(1.0, rest["rps"] * args.duration) * 1e6,
        "rss_mb": sum(c.rss_mb(p) for p in workers) / len(workers),
        "scrapes": scraper.times_ms,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workers", default=f"1,{min(os.cpu_count() or 1, 4)}")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    c.require("wrk", "h2load")
    counts = [int(x) for x in args.workers.split(",")]
    load_start = c.load_average()
    results: dict[int, list[dict]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        work = Path(tmp)
        base = export_demo(work / MODEL)
        (work / "monitoring.config").write_text(
            f'prometheus_config {{ enable: true path: "{PATH}" }}\n'
        )
        grpc_file = grpc_body(work / "predict.bin")
        body = json.dumps({"instances": [ROW]})
        common = [f"--model_name={MODEL}", f"--model_base_path={base}",
                  f"--monitoring_config_file={work / 'monitoring.config'}"]  # fmt: skip
        for r in range(args.rounds):
            for n in counts if r % 2 == 0 else counts[::-1]:
                with c.server(common, workers=n) as srv:
                    srv.wait_until_available(MODEL)
                    results[n].append(measure(srv, body, grpc_file, args))
    load_end = c.load_average()
    print(f"\nworkers: demo model, {args.connections} connections, {args.rounds} rounds x "
          f"{args.duration} s, unpinned, {os.cpu_count()} CPUs; load average {load_start} at the "
          f"start, {load_end} at the end\n")  # fmt: skip
    print("| workers | REST rps | vs 1 | gRPC rps | vs 1 | CPU µs / REST req | RSS MB / worker "
          "| scrape p50 ms | scrape p99 ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    one = results[counts[0]]
    base_rest = c.median([x["rest"] for x in one])
    base_grpc = c.median([x["grpc"] for x in one])
    for n in counts:
        rows = results[n]
        rest = c.median([x["rest"] for x in rows])
        grpc = c.median([x["grpc"] for x in rows])
        scrapes = sorted(t for x in rows for t in x["scrapes"])
        p50 = scrapes[len(scrapes) // 2] if scrapes else float("nan")
        p99 = scrapes[int(len(scrapes) * 0.99)] if scrapes else float("nan")
        errors = sum(x["rest_errors"] + x["grpc_errors"] for x in rows)
        if n != counts[0]:
            c.summary("workers", f"REST rps, {n} workers / 1 (unpinned, load average {load_start})",
                      rest / base_rest, "≥ 1.3×" if n == 2 else "")  # fmt: skip
            c.summary("workers", f"gRPC rps, {n} workers / 1", grpc / base_grpc)
        c.summary("workers", f"scrape p50 under REST load, {n} worker(s)", p50, "< 5 ms", " ms")
        print(f"| {n} | {rest:.0f} | {rest / base_rest:.2f}× | {grpc:.0f} | "
              f"{grpc / base_grpc:.2f}× | {c.median([x['cpu_us'] for x in rows]):.0f} | "
              f"{c.median([x['rss_mb'] for x in rows]):.0f} | {p50:.2f} | {p99:.2f} |"
              + (f" {errors:.0f} errors" if errors else ""))  # fmt: skip
    print("\nper round, REST rps: " + "; ".join(
        f"{n} workers " + " ".join(f"{x['rest']:.0f}" for x in results[n]) for n in counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
