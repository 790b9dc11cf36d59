"""Does batching pay on a compute-bound model? A 3-conv CNN on 64x64x3, 32 one-row gRPC clients.

The physical limit is the model's own throughput in-process at batch size 32 (our Servable, one
session callable, no server). The server then answers 32 concurrent one-row gRPC Predict clients
(h2load with a prebuilt body, one request in flight per connection), without batching and with
each batching file below. All in one run, unpinned. The last column is the batch scheduler alone:
32 one-row callers in-process through BatchingRunner, no protocol. Prints rows/s, p50/p99 (from h2load's
per-request log), served / in-process ratio (goal >= 0.8) and the p99 budget of the issue:
2 x batch_timeout + one batch's compute.

Two more rows say what any server could reach here. "grpc.aio, fixed answer" is the protocol
ceiling for this request (49 KB): a grpc.aio generic handler answering fixed bytes, unpinned, with
the same load. The CPU budget adds what the goal rate costs before any server work: the load
generator's CPU per request (h2load's own, measured) and TensorFlow's CPU per row at batch 32
(in-process); what is left of the machine's cores, per request, is all a server may spend on
receiving, parsing, batching and answering.

    .venv/bin/python bench/cnn_batching.py [--duration 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import _common as common  # noqa: E402
from bench._common import grpc_frame  # noqa: E402

MODEL = "cnn"
CLIENTS = 32
BATCHINGS = {
    "issue's file (32, 2000 µs, 2 threads)": (32, 2000, 2),
    "32, 5000 µs, 1 thread": (32, 5000, 1),
    "32, 10000 µs, 1 thread": (32, 10000, 1),
}


def export_cnn(base: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((64, 64, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", padding="same")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, activation="relu", padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, activation="softmax", name="scores")(x)
    keras.Model(inp, out).export(str(base / "1"), verbose=False)
    return base


def in_process(base: Path, batch: int, seconds: float) -> tuple[float, float]:
    """Rows/s of the model at `batch` rows per call, through our own Servable, and the CPU
    time (every thread of this process) a row costs, in µs."""
    import numpy as np

    from orchestrator.server import runner as r

    servable = r.Servable(MODEL, 1, str(base / "1"), r.SessionOptions())
    plan = r.plan_predict(servable, "", ["image"], [])
    x = np.random.default_rng(0).random((batch, 64, 64, 3), dtype=np.float32)
    for _ in range(3):
        servable.run(plan.key, [x])
    n, t0, c0 = 0, time.perf_counter(), common.cpu_seconds(os.getpid())
    while time.perf_counter() - t0 < seconds:
        servable.run(plan.key, [x])
        n += 1
    rate = n * batch / (time.perf_counter() - t0)
    cpu_us = (common.cpu_seconds(os.getpid()) - c0) / (n * batch) * 1e6
    servable.close()
    return rate, cpu_us


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def scheduler_only(base: Path, cfg: tuple[int, int, int], seconds: float) -> float:
    """Rows/s of CLIENTS one-row callers through our BatchingRunner in-process (no protocol):
    what the batch scheduler alone keeps of the batch-32 rate."""
    import asyncio

    import numpy as np

    from orchestrator.server import runner as r
    from orchestrator.server.batching import BatchingRunner, RunPool
    from orchestrator.server.config import BatchingOptions

    size, timeout_us, threads = cfg
    servable = r.Servable(MODEL, 1, str(base / "1"), r.SessionOptions())
    plan = r.plan_predict(servable, "", ["image"], [])
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    pool = RunPool(max(4, 2 * (os.cpu_count() or 1)))
    runner = BatchingRunner(pool, BatchingOptions(
        max_batch_size=size, batch_timeout_micros=timeout_us, num_batch_threads=threads,
        max_enqueued_batches=1000))  # fmt: skip

    async def main() -> float:
        n = 0
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal n
            while time.perf_counter() < deadline:
                await runner.run(servable, plan.key, [x])
                n += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        return n / (time.perf_counter() - t0)

    try:
        return asyncio.run(main())
    finally:
        pool.shutdown()
        servable.close()


def h2load_latency(
    target: str, body_file: str, duration: int, log: Path, server_pid: int
) -> dict[str, float]:
    """Rows/s, p50/p99 ms, and the CPU µs a request costs the server and h2load itself."""
    from orchestrator.protocol import methods as M

    server0, load0 = common.cpu_seconds(server_pid), _children_cpu()
    stats = common.h2load(target, body_file, duration=duration, connections=CLIENTS,
                          path=M.PREDICT.path, log_file=str(log))  # fmt: skip
    server1, load1 = common.cpu_seconds(server_pid), _children_cpu()
    # log lines: start time (µs since epoch), status, response time (µs)
    lat = sorted(int(line.split()[2]) / 1e3 for line in log.read_text().splitlines() if line)
    # both CPU deltas include h2load's warm-up second, run at the same load
    done = max(stats["rps"] * (duration + 1), 1.0)
    return {
        "rps": stats["rps"],
        "p50": lat[len(lat) // 2] if lat else float("nan"),
        "p99": lat[int(len(lat) * 0.99)] if lat else float("nan"),
        "server_us": (server1 - server0) / done * 1e6,
        "load_us": (load1 - load0) / done * 1e6,
    }


def framework_ceiling(body_file: str, answer: bytes, duration: int, log: Path) -> dict[str, float]:
    """The same load against grpc.aio answering fixed bytes: the most a grpc.aio server does."""
    from bench.ceiling import Fixed

    with Fixed("grpc", answer, pinned=False) as fixed:
        assert fixed.proc is not None
        return h2load_latency(f"127.0.0.1:{fixed.port}", body_file, duration, log, fixed.proc.pid)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=10)
    args = ap.parse_args()
    common.require("h2load")
    import numpy as np

    from orchestrator.protocol import methods as M
    from orchestrator.protocol.tensors import to_tensor_proto

    work = Path(tempfile.mkdtemp(prefix="bench-cnn-"))
    try:
        base = export_cnn(work / MODEL)
        one_row, _ = in_process(base, 1, 3.0)
        batch32, row_cpu_us = in_process(base, 32, 5.0)
        batch_ms = 32 / batch32 * 1e3
        req = M.PREDICT.request()
        req.model_spec.name = MODEL
        x = np.random.default_rng(1).random((1, 64, 64, 3), dtype=np.float32)
        req.inputs["image"].CopyFrom(to_tensor_proto(x))
        body = work / "predict.grpc"
        body.write_bytes(grpc_frame(req.SerializeToString()))
        answer = M.PREDICT.response()
        answer.model_spec.name = MODEL
        answer.outputs["scores"].CopyFrom(to_tensor_proto(np.zeros((1, 10), np.float32)))
        rows: list[tuple[str, dict[str, float], float]] = []
        for label, cfg in [("no batching", None), *BATCHINGS.items()]:
            extra: list[str] = []
            budget = float("nan")
            if cfg is not None:
                size, timeout_us, threads = cfg
                f = work / f"batching-{size}-{timeout_us}-{threads}.config"
                f.write_text(
                    f"max_batch_size {{ value: {size} }}\n"
                    f"batch_timeout_micros {{ value: {timeout_us} }}\n"
                    f"num_batch_threads {{ value: {threads} }}\n"
                    "max_enqueued_batches { value: 1000 }\n"
                )
                extra = ["--enable_batching", f"--batching_parameters_file={f}"]
                budget = 2 * timeout_us / 1e3 + batch_ms
            with common.server([f"--model_name={MODEL}", f"--model_base_path={base}", *extra]) as srv:
                srv.wait_until_available(MODEL)
                assert srv.proc is not None
                stats = h2load_latency(
                    srv.grpc_target, str(body), args.duration, work / "h2.log", srv.proc.pid
                )
            if cfg is not None:
                stats["scheduler"] = scheduler_only(base, cfg, 5.0)
            rows.append((label, stats, budget))
            print(f"{label}: {stats['rps']:.0f} rows/s, p99 {stats['p99']:.1f} ms", file=sys.stderr)
        fixed = framework_ceiling(str(body), answer.SerializeToString(), args.duration,
                                  work / "h2.log")  # fmt: skip
        rows.append(("grpc.aio, fixed answer (no model work)", fixed, float("nan")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cores = os.cpu_count() or 1
    goal_rps = 0.8 * batch32
    load_us = statistics.median(s["load_us"] for _, s, _ in rows)
    fixed_cost = (load_us + row_cpu_us) * goal_rps / 1e6  # cores, before any server work
    left_us = (cores - fixed_cost) / goal_rps * 1e6
    print(
        f"\n3-conv CNN 64x64x3, {CLIENTS} one-row gRPC clients (h2load), {args.duration}s each, "
        f"unpinned, {cores} CPUs, load average {os.getloadavg()[0]:.1f}\n"
        f"in-process: batch 1 {one_row:.0f} rows/s, batch 32 {batch32:.0f} rows/s "
        f"({batch_ms:.1f} ms a batch, {row_cpu_us:.0f} µs of CPU a row)\n"
    )
    print("| server | rows/s | p50 ms | p99 ms | served / in-process b32 | goal | p99 budget ms "
          "| server CPU µs a request | scheduler alone / b32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, s, budget in rows:
        alone = f"{s['scheduler'] / batch32:.2f}" if "scheduler" in s else ""
        print(
            f"| {label} | {s['rps']:.0f} | {s['p50']:.1f} | {s['p99']:.1f} | "
            f"{s['rps'] / batch32:.2f} | 0.8 | {budget:.1f} | {s['server_us']:.0f} | {alone} |"
        )
    print(
        f"\nCPU budget at the goal ({goal_rps:.0f} rows/s): h2load {load_us:.0f} µs a request and "
        f"TensorFlow {row_cpu_us:.0f} µs a row take {fixed_cost:.2f} of {cores} cores, which leaves "
        + (f"{left_us:.0f} µs a request for the server's own work (grpc.aio's fixed answer costs "
           f"{fixed['server_us']:.0f})." if left_us > 0 else
           "nothing for the server's own work: no server reaches the goal on this machine.")
    )  # fmt: skip
    for label, s, budget in rows:
        p99_note = f", p99 {s['p99']:.0f} ms vs budget {budget:.0f} ms" if budget == budget else ""
        common.summary("cnn_batching", f"{label}: served / in-process batch 32{p99_note}",
                       s["rps"] / batch32, "≥ 0.8×")  # fmt: skip
    common.summary("cnn_batching", "cores the load generator and TensorFlow need at the goal rate",
                   fixed_cost, f"< {cores} leaves room for the server", unit=" cores")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
