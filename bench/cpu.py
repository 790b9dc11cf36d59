"""Server CPU time per request, before vs after a change, and the scrape time under load.

CPU seconds of the server's process tree (all threads, from /proc) divided by the requests it
answered, over a fixed gRPC call count (h2load) or a fixed REST load time (wrk, which counts the
answers):
unlike rps, this barely moves when other programs share the machine, so two versions of the
server can be compared on a busy machine. The demo model (4 floats in, 3 out); the server is
pinned to core 0 and h2load to core 1. `--before DIR` runs a second server from the
`orchestrator` package under DIR (e.g. `git archive BASE orchestrator | tar -x -C DIR`),
alternating with this tree's round by round; `--compare KEY=VALUE` runs this tree a second time with
that environment variable set (e.g. `TFS_VERSION_METRICS=0`), alternating the same way. With `--scrape`, a keep-alive client scrapes the
Prometheus page every 100 ms during the REST load (p50 / p99 / max).

    .venv/bin/python bench/cpu.py [--requests 20000] [--rounds 3] [--before DIR] [--scrape]
    .venv/bin/python bench/cpu.py --compare TFS_VERSION_METRICS=0 --rounds 8
    .venv/bin/python bench/cpu.py --compare-batching "32 0 1"   # max_batch_size, timeout µs, threads
    .venv/bin/python bench/cpu.py --batching "32 0 1" --before DIR   # both servers batch
    .venv/bin/python bench/cpu.py --profile DIR   # py-spy raw stacks of the server under REST and gRPC load
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import _common as common  # noqa: E402
from bench.ceiling import MODEL, build_bodies, export_demo  # noqa: E402
from tests.helpers import server as helpers  # noqa: E402
from tests.helpers.server import ServerProcess  # noqa: E402

SERVER_CORE, LOAD_CORE = "0", "1"
GRPC_PATH = "/tensorflow.serving.PredictionService/Predict"
PROM = "/monitoring/prometheus/metrics"


def h2load_n(url: str, body_file: str, *, requests: int, connections: int, rest: bool) -> dict[str, float]:
    """`requests` calls, one in flight per connection; rps and how many succeeded."""
    headers = (["--h1", "-H", "content-type: application/json"] if rest
               else ["-H", "content-type: application/grpc", "-H", "te: trailers"])
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "h2load", "-n", str(requests), "-c", str(connections),
         "-m", "1", "-t", "1", "-d", body_file, *headers, url],
        capture_output=True, text=True, timeout=600, check=False,
    ).stdout  # fmt: skip
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    assert rps and done, out
    return {"rps": float(rps.group(1)), "ok": float(done.group(1))}


def wrk_n(url: str, body_file: str, *, seconds: int, connections: int) -> dict[str, float]:
    """REST load from wrk (h2load's HTTP/1.1 client leaves our server idle half the time, so
    rps would measure it, not us); rps and how many requests were answered."""
    script = Path(body_file).with_suffix(".lua")
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(Path(body_file).read_text())}\n")  # fmt: skip
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    total = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    assert total and rps, out
    return {"rps": float(rps.group(1)), "ok": float(total.group(1)) - (int(bad.group(1)) if bad else 0)}


def measure(srv: ServerProcess, work: Path, args: argparse.Namespace) -> dict[str, float]:
    assert srv.proc is not None
    rest_body, _, grpc_req, _ = build_bodies(srv.grpc_target, srv.rest_url)
    (work / "rest.json").write_text(rest_body)
    (work / "grpc.bin").write_bytes(common.grpc_frame(grpc_req))
    rest_url = f"{srv.rest_url}/v1/models/{MODEL}:predict"
    out: dict[str, float] = {}
    for proto in ("rest", "grpc"):
        url = rest_url if proto == "rest" else f"http://{srv.grpc_target}{GRPC_PATH}"
        body = str(work / ("rest.json" if proto == "rest" else "grpc.bin"))
        if proto == "rest":
            wrk_n(url, body, seconds=1, connections=args.connections)  # warm
        else:
            h2load_n(url, body, requests=500, connections=args.connections, rest=False)
        scraper = None
        if args.scrape and proto == "rest":
            scraper = common.Scraper(srv.rest_url + PROM)
            scraper.start()
        c0 = common.cpu_seconds(srv.proc.pid)
        if proto == "rest":
            stats = wrk_n(url, body, seconds=args.seconds, connections=args.connections)
        else:
            stats = h2load_n(url, body, requests=args.requests, connections=args.connections,
                             rest=False)  # fmt: skip
        used = common.cpu_seconds(srv.proc.pid) - c0
        if scraper is not None:
            scraper.stop.set()
            scraper.join(10)
            times = sorted(scraper.times_ms)
            if times:
                out["scrape_p50"] = times[len(times) // 2]
                out["scrape_p99"] = times[min(len(times) - 1, int(len(times) * 0.99))]
                out["scrape_max"] = times[-1]
                out["scrapes"] = len(times)
        out[f"{proto}_rps"] = stats["rps"]
        out[f"{proto}_us"] = used / max(stats["ok"], 1) * 1e6
        if proto == "grpc" and stats["ok"] < args.requests:
            print(f"warning: {proto}: {args.requests - stats['ok']:.0f} requests failed", file=sys.stderr)
    return out


def profile_rest(srv: ServerProcess, work: Path, args: argparse.Namespace) -> None:
    """Wall-clock samples of the server under REST load (py-spy, when installed)."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("error: py-spy is not installed\nfix: .venv/bin/pip install py-spy")
    assert srv.proc is not None
    rest_body, _, grpc_req, _ = build_bodies(srv.grpc_target, srv.rest_url)
    (work / "rest.json").write_text(rest_body)
    (work / "grpc.bin").write_bytes(common.grpc_frame(grpc_req))
    dest = Path(args.profile)
    dest.mkdir(parents=True, exist_ok=True)
    for proto in ("rest", "grpc"):
        url = (f"{srv.rest_url}/v1/models/{MODEL}:predict" if proto == "rest"
               else f"http://{srv.grpc_target}{GRPC_PATH}")  # fmt: skip
        body = str(work / ("rest.json" if proto == "rest" else "grpc.bin"))
        spy_proc = subprocess.Popen(
            [spy, "record", "--pid", str(srv.proc.pid), "--duration", "8", "--rate", "250",
             "--nonblocking", "--format", "raw", "--output", str(dest / f"{proto}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        end = time.monotonic() + 7
        while time.monotonic() < end:
            if proto == "rest":
                wrk_n(url, body, seconds=2, connections=args.connections)
            else:
                h2load_n(url, body, requests=2000, connections=args.connections, rest=False)
        spy_proc.wait(120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000, help="gRPC calls per round")
    ap.add_argument("--seconds", type=int, default=8, help="REST load per round (wrk)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--before", default="", help="folder holding the orchestrator package to compare")
    ap.add_argument("--compare", default="", metavar="KEY=VALUE",
                    help="also run this tree with that environment variable, round by round")
    ap.add_argument("--compare-batching", default="", metavar="'SIZE MICROS THREADS'",
                    help="also run this tree with --enable_batching and that batching file")
    ap.add_argument("--batching", default="", metavar="'SIZE MICROS THREADS'",
                    help="run every server with --enable_batching and that batching file")
    ap.add_argument("--scrape", action="store_true", help="time metrics scrapes under the REST load")
    ap.add_argument("--profile", default="", help="py-spy raw stacks of this tree's server to DIR")
    args = ap.parse_args()
    common.require("wrk", "h2load", "taskset")
    work = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    base = export_demo(work / MODEL)
    (work / "monitoring.config").write_text(f'prometheus_config {{ enable: true path: "{PROM}" }}\n')
    helpers.SERVER_CMD = ["taskset", "-c", SERVER_CORE, *helpers.SERVER_CMD]
    server_args = [f"--model_name={MODEL}", f"--model_base_path={base}",
                   f"--monitoring_config_file={work / 'monitoring.config'}"]
    variants = {"after": {"PYTHONPATH": str(ROOT)}}
    if args.before:
        variants["before"] = {"PYTHONPATH": str(Path(args.before).resolve())}
    if args.compare:
        key, sep, value = args.compare.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --compare {args.compare!r} is not KEY=VALUE\n"
                             "fix: e.g. --compare TFS_VERSION_METRICS=0")  # fmt: skip
        variants[args.compare] = {"PYTHONPATH": str(ROOT), key: value}
    flags: dict[str, list[str]] = {}
    if args.batching:
        label, extra = common.batching_flags(work, args.batching)
        server_args += extra
        print(f"every server batches: {label}", file=sys.stderr)
    if args.compare_batching:
        label, extra = common.batching_flags(work, args.compare_batching)
        name = f"batching {label}"
        variants[name] = {"PYTHONPATH": str(ROOT)}
        flags[name] = extra
    results: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    try:
        if args.profile:
            extra = next(iter(flags.values()), [])  # --compare-batching profiles the batched server
            with ServerProcess(server_args + extra, env=variants["after"]) as srv:
                srv.wait_until_available(MODEL)
                profile_rest(srv, work, args)
            return 0
        for rnd in range(args.rounds):
            order = sorted(variants, reverse=rnd % 2 == 1)
            for name in order:
                with ServerProcess(server_args + flags.get(name, []), env=variants[name]) as srv:
                    srv.wait_until_available(MODEL)
                    row = measure(srv, work, args)
                results[name].append(row)
                print(f"round {rnd} {name}: " + json.dumps({k: round(v, 1) for k, v in row.items()}),
                      file=sys.stderr)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nDemo model, REST {args.seconds} s of wrk and {args.requests} gRPC calls per round, "
          f"{args.connections} "
          f"connections, server on core {SERVER_CORE}, h2load on core {LOAD_CORE}, medians of "
          f"{args.rounds} rounds; load average {common.load_average()}\n")
    keys = ["rest_us", "rest_rps", "grpc_us", "grpc_rps"]
    if args.scrape:
        keys += ["scrape_p50", "scrape_p99", "scrape_max"]
    print("| server | " + " | ".join(keys) + " |")
    print("| --- |" + " ---: |" * len(keys))
    for name, rows in results.items():
        cells = [f"{statistics.median(r[k] for r in rows if k in r):.1f}" if any(k in r for r in rows)
                 else "-" for k in keys]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")
    after = results["after"]
    for proto in ("rest", "grpc"):
        common.summary("cpu", f"{proto} server CPU µs / request (pinned)",
                       statistics.median(r[f"{proto}_us"] for r in after), unit=" µs")  # fmt: skip
    if args.scrape:
        common.summary("cpu", "scrape p99 under REST load, kept-alive connection",
                       statistics.median(r["scrape_p99"] for r in after if "scrape_p99" in r),
                       "< 5 ms", unit=" ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
