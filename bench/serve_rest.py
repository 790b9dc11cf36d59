"""Serving throughput: tfs-model-server (batching off / on) vs a Flask + gunicorn reference.

One run, one machine, one load generator: wrk (Debian's /usr/bin/wrk) with 16 connections posting
one-row JSON predict requests for a Keras MLP 784 -> 256 -> 10; then gRPC Predict from an asyncio
generator (16 requests in flight). Servers run one at a time, on 127.0.0.1, each for a bounded
duration. Prints a markdown table with rps, p50, p99 and the ratio to Flask.

    .venv/bin/python bench/serve_rest.py [--duration 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.helpers.server import ServerProcess, free_port, wait_until  # noqa: E402

MODEL = "mlp"


def export_mlp(base: Path) -> Path:
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    inp = keras.Input((784,), name="pixels")
    hid = keras.layers.Dense(256, activation="relu")(inp)
    out = keras.layers.Dense(10, activation="softmax")(hid)
    keras.Model(inp, out).export(str(base / "1"), verbose=False)
    del np
    return base


def wrk(url: str, body: str, *, duration: int, connections: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n"
        )
        script = fh.name
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rps,
        "p50": _ms(re.search(r"\s50%\s+([\d.]+\w+)", out).group(1)),
        "p99": _ms(re.search(r"\s99%\s+([\d.]+\w+)", out).group(1)),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


async def grpc_load(
    target: str, row: list[float], *, duration: int, concurrency: int
) -> dict[str, float]:
    import grpc
    import numpy as np

    from orchestrator.protocol import methods as M
    from orchestrator.protocol.tensors import to_tensor_proto

    req = M.PREDICT.request()
    req.model_spec.name = MODEL
    req.inputs["pixels"].CopyFrom(to_tensor_proto(np.asarray([row], dtype=np.float32)))
    payload = req.SerializeToString()
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as ch:
        call = ch.unary_unary(M.PREDICT.path, request_serializer=None, response_deserializer=None)
        await call(payload, timeout=30)  # warm
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    await call(payload, timeout=30)
                    latencies.append((time.perf_counter() - t0) * 1e3)
                except grpc.RpcError:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "errors": float(errors),
    }


def start_flask(model_path: Path) -> tuple[subprocess.Popen, int]:
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or shutil.which(
        "gunicorn"
    )
    if gunicorn is None:
        raise SystemExit(
            "gunicorn is not installed: .venv/bin/pip install flask gunicorn (bench only)"
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            gunicorn,
            "-w",
            "1",
            "--threads",
            "8",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "bench.flask_ref:app",
        ],
        cwd=ROOT,
        env={**os.environ, "MODEL_PATH": str(model_path)},
    )
    import urllib.request

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
            return True

    wait_until(up, timeout_s=120, what=f"Flask reference on port {port}", interval_s=0.5)
    return proc, port


def warm(url: str, body: str) -> None:
    import urllib.request

    for _ in range(20):
        req = urllib.request.Request(
            url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    import random

    random.seed(0)
    row = [round(random.random(), 4) for _ in range(784)]
    body = json.dumps({"instances": [row]})
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    base = export_mlp(work / MODEL)
    (work / "batching.config").write_text(
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 500 }\n"
        "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 2 }\n"
    )
    results: list[tuple[str, dict[str, float]]] = []
    common = [f"--model_name={MODEL}", f"--model_base_path={base}"]
    try:
        for label, extra in (
            ("tfs-model-server REST", []),
            (
                "tfs-model-server REST, batching",
                ["--enable_batching", f"--batching_parameters_file={work / 'batching.config'}"],
            ),
        ):
            with ServerProcess(common + extra) as srv:
                srv.wait_until_available(MODEL)
                url = f"{srv.rest_url}/v1/models/{MODEL}:predict"
                warm(url, body)
                results.append(
                    (label, wrk(url, body, duration=args.duration, connections=args.connections))
                )
                grpc_label = label.replace("REST", "gRPC")
                stats = asyncio.run(
                    grpc_load(
                        srv.grpc_target, row, duration=args.duration, concurrency=args.connections
                    )
                )
                results.append((grpc_label, stats))
        proc, port = start_flask(base / "1")
        try:
            url = f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict"
            warm(url, body)
            results.append(
                (
                    "Flask + gunicorn (1 worker, 8 threads)",
                    wrk(url, body, duration=args.duration, connections=args.connections),
                )
            )
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    flask = results[-1][1]
    print(
        f"\nKeras MLP 784-256-10, one-row requests, {args.connections} connections, {args.duration}s each, "
        f"{os.cpu_count()} CPUs, load generator on the same machine\n"
    )
    print("| server | rps | p50 ms | p99 ms | errors | rps vs Flask | p99 below Flask |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for label, s in results:
        print(
            f"| {label} | {s['rps']:.0f} | {s['p50']:.2f} | {s['p99']:.2f} | {s['errors']:.0f} | "
            f"{s['rps'] / flask['rps']:.1f}x | {'yes' if s['p99'] < flask['p99'] else 'no'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
