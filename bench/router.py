"""Router overhead and weight-change latency, measured side by side in one run.

    .venv/bin/python bench/router.py [--seconds 10] [--connections 16]

1. wrk, same settings, one-row JSON predicts on the demo model: straight to a replica vs
   through the HAProxy router in front of it. Prints rps, p50, p99 and the ratios.
2. Weight change to effect: the canary weight is switched 0 → 100 through the runtime API while
   a client sends requests one after another; prints the time until the first and until every
   answer comes from the canary (versions 1 and 2 answer differently).
Every request goes to 127.0.0.1. Needs wrk and haproxy (scripts/setup_system.sh).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.demo import build_demo
from orchestrator.health import wait_until_available
from orchestrator.router.haproxy import HAProxyRouter, RouterConfig, Upstream, wait_until_routed
from orchestrator.runtime.base import free_port
from orchestrator.runtime.local import server_command

BODY = '{"instances": [[1.0, 2.0, 3.0, 4.0]]}'


def start_server(models: Path, version: int, log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    grpc, rest = free_port(), free_port()
    config = log.with_suffix(".config")
    config.write_text(
        f'model_config_list {{ config {{ name: "demo" base_path: "{models / "demo"}" '
        f'model_platform: "tensorflow" model_version_policy {{ specific {{ versions: {version} }} }} }} }}')
    proc = subprocess.Popen([*server_command(), f"--port={grpc}", f"--rest_api_port={rest}",
                             f"--model_config_file={config}"], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={"TFS_BIND_HOST": "127.0.0.1", "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})
    ready = wait_until_available(f"http://127.0.0.1:{rest}", {"demo": [version]}, deadline_s=120)
    if not ready.ready:
        raise SystemExit(f"server for version {version} did not start: {ready.detail}")
    return proc, grpc, rest


def wrk(url: str, seconds: int, connections: int, lua: Path) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": pct("50"), "p99": pct("99"), "non2xx": float(errors.group(1)) if errors else 0.0}


def weight_change(router: HAProxyRouter, url: str, canary_answer: float) -> tuple[float, float]:
    session = requests.Session()
    router.set_weight(0)
    for _ in range(20):
        session.post(url, data=BODY, timeout=5)
    start = time.perf_counter()
    router.set_weight(100)
    first = every = None
    streak = 0
    deadline = start + 10
    while time.perf_counter() < deadline:
        answer = session.post(url, data=BODY, timeout=5).json()["predictions"][0][0]
        now = time.perf_counter() - start
        if abs(answer - canary_answer) < 1e-6:
            first = now if first is None else first
            streak += 1
            if streak >= 50:
                every = every if every is not None else now
                break
        else:
            streak, every = 0, None
    return (first or float("nan")) * 1000, (every or float("nan")) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    for tool in ("wrk", "haproxy"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run scripts/setup_system.sh")
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        root = Path(tmp)
        build_demo(root / "models", root / "configs")
        lua = root / "post.lua"
        lua.write_text(f'wrk.method = "POST"\nwrk.body = \'{BODY}\'\nwrk.headers["Content-Type"] = "application/json"\n')
        stable, s_grpc, s_rest = start_server(root / "models", 1, root / "stable.log")
        canary, c_grpc, c_rest = start_server(root / "models", 2, root / "canary.log")
        router = HAProxyRouter(root / "router")
        r_rest, r_grpc = free_port(), free_port()
        try:
            router.start(RouterConfig(name="demo", model="demo", rest_port=r_rest, grpc_port=r_grpc,
                                      stable=(Upstream(grpc_port=s_grpc, rest_port=s_rest),)))
            wait_until_routed(router, 1, deadline_s=30)
            path = "/v1/models/demo:predict"
            wrk(f"http://127.0.0.1:{s_rest}{path}", 2, args.connections, lua)  # warm up
            direct = wrk(f"http://127.0.0.1:{s_rest}{path}", args.seconds, args.connections, lua)
            routed = wrk(f"http://127.0.0.1:{r_rest}{path}", args.seconds, args.connections, lua)
            canary_answer = requests.post(f"http://127.0.0.1:{c_rest}{path}", data=BODY, timeout=5).json()["predictions"][0][0]
            router.set_canary([Upstream(grpc_port=c_grpc, rest_port=c_rest)])
            time.sleep(1.5)  # let HAProxy's checks mark the canary UP (bench only)
            first_ms, every_ms = weight_change(router, f"http://127.0.0.1:{r_rest}{path}", canary_answer)
        finally:
            router.stop()
            for proc in (stable, canary):
                proc.terminate()
                proc.wait(timeout=30)
    print(f"## Router overhead (wrk -t2 -c{args.connections} -d{args.seconds}s, one-row JSON predict, demo model)\n")
    print("| path | rps | p50 ms | p99 ms | non-2xx |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in (("direct to replica", direct), ("through HAProxy router", routed)):
        print(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['non2xx']:.0f} |")
    print(f"\nrps ratio router/direct: {routed['rps'] / direct['rps']:.2f}x; "
          f"added p50: {routed['p50'] - direct['p50']:+.2f} ms; added p99: {routed['p99'] - direct['p99']:+.2f} ms")
    print(f"weight 0→100 via runtime API: first canary answer after {first_ms:.1f} ms, "
          f"every answer from canary after {every_ms:.1f} ms")


if __name__ == "__main__":
    main()
