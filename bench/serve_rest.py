"""Serving throughput: tfs-model-server (batching off / on) vs a Flask + gunicorn reference.

One run, one machine, one load generator: wrk (Debian's /usr/bin/wrk) with 16 connections posting
one-row JSON predict requests for a Keras MLP 784 -> 256 -> 10 (with --grpc, also gRPC Predict
from an asyncio generator, 16 requests in flight). Servers run one at a time, on 127.0.0.1, each
for a bounded duration. Besides batching, our server runs with what `tfsctl tune` also tries
(one intra-op thread, TensorFlow's oneDNN kernels off), and Flask with and without oneDNN, so the
ratio is read against the reference at its best too. Prints a markdown table with rps, p50, p99
and the ratio to Flask.

    .venv/bin/python bench/serve_rest.py [--duration 10] [--connections 16] [--grpc]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import MLP as MODEL  # noqa: E402
from bench._common import (  # noqa: E402
    export_mlp,
    grpc_load,
    mlp_body,
    mlp_row,
    require,
    server,
    summary,
    warm,
    wrk,
)
from tests.helpers.server import free_port, wait_until  # noqa: E402

ONEDNN_OFF = {"TF_ENABLE_ONEDNN_OPTS": "0"}  # TensorFlow's own switch, read when it loads
__all__ = ["MODEL", "export_mlp", "grpc_load", "warm", "wrk"]


def start_flask(model_path: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
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
        env={**os.environ, "MODEL_PATH": str(model_path), **(env or {})},
    )
    import urllib.request

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
            return True

    wait_until(up, timeout_s=120, what=f"Flask reference on port {port}", interval_s=0.5)
    return proc, port


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--grpc", action="store_true", help="also gRPC load on each of our servers")
    args = ap.parse_args()
    require("wrk")
    row, body = mlp_row(), mlp_body()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    base = export_mlp(work / MODEL)
    (work / "batching.config").write_text(
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 500 }\n"
        "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 2 }\n"
    )
    # Timeout 0: a batch closes at the end of the event-loop round (orchestrator.server.batching).
    (work / "batching0.config").write_text(
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 1 }\n"
    )
    results: list[tuple[str, dict[str, float]]] = []
    common = [f"--model_name={MODEL}", f"--model_base_path={base}"]
    try:
        batch0 = ["--enable_batching", f"--batching_parameters_file={work / 'batching0.config'}"]
        for label, extra, env in (
            ("tfs-model-server REST", [], None),
            (
                "tfs-model-server REST, batching (32, 500 µs, 2 threads)",
                ["--enable_batching", f"--batching_parameters_file={work / 'batching.config'}"],
                None,
            ),
            ("tfs-model-server REST, batching (32, 0 µs, 1 thread)", batch0, None),
            # What `tfsctl tune` can choose besides batching: TensorFlow's threads and kernels.
            ("tfs-model-server REST, batching (32, 0 µs, 1 thread), intra-op 1",
             [*batch0, "--tensorflow_intra_op_parallelism=1"], None),
            ("tfs-model-server REST, batching (32, 0 µs, 1 thread), intra-op 1, oneDNN off",
             [*batch0, "--tensorflow_intra_op_parallelism=1"], ONEDNN_OFF),
            ("tfs-model-server REST, oneDNN off", [], ONEDNN_OFF),
        ):
            with server(common + extra, env=env) as srv:
                srv.wait_until_available(MODEL)
                url = f"{srv.rest_url}/v1/models/{MODEL}:predict"
                warm(url, body)
                results.append(
                    (label, wrk(url, body, duration=args.duration, connections=args.connections))
                )
                if args.grpc:
                    grpc_label = label.replace("REST", "gRPC")
                    stats = asyncio.run(
                        grpc_load(
                            srv.grpc_target, row, duration=args.duration, concurrency=args.connections
                        )
                    )
                    results.append((grpc_label, stats))
        for label, env in (("Flask + gunicorn (1 worker, 8 threads), oneDNN off", ONEDNN_OFF),
                           ("Flask + gunicorn (1 worker, 8 threads)", None)):
            proc, port = start_flask(base / "1", env)
            try:
                url = f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict"
                warm(url, body)
                results.append(
                    (label, wrk(url, body, duration=args.duration, connections=args.connections))
                )
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    by = dict(results)
    flask = by["Flask + gunicorn (1 worker, 8 threads)"]
    for label in ("tfs-model-server REST", "tfs-model-server REST, batching (32, 0 µs, 1 thread)",
                  "tfs-model-server REST, batching (32, 0 µs, 1 thread), intra-op 1, oneDNN off"):
        summary("serve_rest", label.replace("tfs-model-server REST", "REST rps vs Flask + gunicorn"),
                by[label]["rps"] / flask["rps"], "≥ 10×")  # fmt: skip
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
