"""What every bench shares: load generators outside Python (wrk, h2load), the MLP's 784-float
request, CPU and memory of a server's processes from /proc, and starting our server.

Import it first in a bench (it puts the repository on sys.path and quietens TensorFlow).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from orchestrator.protocol import wire  # noqa: E402
from tests.helpers.server import ServerProcess, wait_until  # noqa: E402

_PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client", "taskset": "util-linux"}


def require(*tools: str) -> None:
    """Stop with the apt package to install when a load generator is missing."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise SystemExit(
                f"error: {tool} is not installed\nfix: apt-get install {_PACKAGES.get(tool, tool)}"
            )


def mlp_row(seed: int = 0) -> list[float]:
    """One 784-float row (the MLP benches' input), the same every run."""
    rnd = random.Random(seed)
    return [round(rnd.random(), 4) for _ in range(784)]


def mlp_body(seed: int = 0) -> str:
    return json.dumps({"instances": [mlp_row(seed)]})


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert m, text
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def _pinned(core: str | None) -> list[str]:
    return ["taskset", "-c", core] if core is not None else []


def wrk(
    url: str,
    body: str,
    *,
    duration: int,
    connections: int,
    threads: int = 2,
    core: str | None = None,
) -> dict[str, float]:
    """POST `body` as JSON for `duration` s; rps, p50 / p99 ms and non-2xx answers."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n"
        )
        script = fh.name
    try:
        out = subprocess.run(
            [*_pinned(core), "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s",
             "--latency", "-s", script, url],
            capture_output=True, text=True, timeout=duration + 60, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m, out
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    p50 = re.search(r"\s50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"\s99%\s+([\d.]+\w+)", out)
    return {
        "rps": float(m.group(1)),
        "p50": _ms(p50.group(1)) if p50 else float("nan"),
        "p99": _ms(p99.group(1)) if p99 else float("nan"),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


grpc_frame = wire.grpc_frame  # the benches' h2load bodies

def h2load(
    target: str,
    body_file: str,
    *,
    duration: int,
    connections: int,
    path: str,
    core: str | None = None,
    log_file: str | None = None,
) -> dict[str, float]:
    """gRPC unary calls from h2load (one in flight per connection); rps and failed calls."""
    out = subprocess.run(
        [*_pinned(core), "h2load", "-c", str(connections), "-m", "1", "-t", "1",
         "-D", str(duration), "--warm-up-time=1", "-d", body_file,
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         *(["--log-file", log_file] if log_file else []), f"http://{target}{path}"],
        capture_output=True, text=True, timeout=duration + 60, check=False,
    ).stdout  # fmt: skip
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    assert m, out
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    errors = float(int(done.group(1)) - int(done.group(2))) if done else 0.0
    return {"rps": float(m.group(1)), "errors": errors}


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (a supervisor and its workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                text = Path(f"/proc/{p}/task/{task}/children").read_text()
                todo.extend(int(c) for c in text.split())
        except OSError:
            continue
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants (all threads), from /proc."""
    total = 0.0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mb(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextmanager
def server(
    args: list[str], *, env: dict[str, str] | None = None, workers: int = 1
) -> Iterator[ServerProcess]:
    """Our server on free loopback ports, back once it serves (every worker, when several)."""
    if workers > 1:
        args = [*args, f"--rest_api_num_threads={workers}"]
    srv = ServerProcess(args, env=env).start()
    try:
        srv.wait_until_ready(timeout_s=600)  # a shared machine can take minutes to import TF
        if workers > 1:
            wait_until(
                lambda: f"Serving with {workers} worker processes" in srv.logs(),
                timeout_s=600, what=f"{workers} workers", logs=srv.logs,
            )  # fmt: skip
        yield srv
    finally:
        srv.stop()


MLP = "mlp"


def export_mlp(base: Path) -> Path:
    """Keras MLP 784 -> 256 -> 10 (the serving benches' model), version 1 under base."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((784,), name="pixels")
    hid = keras.layers.Dense(256, activation="relu")(inp)
    out = keras.layers.Dense(10, activation="softmax")(hid)
    keras.Model(inp, out).export(str(base / "1"), verbose=False)
    return base


def warm(url: str, body: str, n: int = 20) -> None:
    for _ in range(n):
        req = urllib.request.Request(
            url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()


async def grpc_load(
    target: str, row: list[float], *, duration: int, concurrency: int, model: str = MLP
) -> dict[str, float]:
    """gRPC Predict of one 784-float row from `concurrency` asyncio callers."""
    import asyncio
    import time

    import grpc

    from orchestrator.protocol import methods as M

    payload = mlp_request(row, model)
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


def batching_flags(folder: Path, setting: str) -> tuple[str, list[str]]:
    """('SIZE/MICROS µs/THREADS', server flags) for `setting` "SIZE MICROS THREADS": a batching
    parameters file written under `folder` and the flags that turn it on."""
    size, micros, threads = setting.split()
    path = folder / f"batching-{size}-{micros}-{threads}.config"
    path.write_text(f"max_batch_size {{ value: {size} }}\nbatch_timeout_micros {{ value: {micros} }}\n"
                    f"num_batch_threads {{ value: {threads} }}\nmax_enqueued_batches {{ value: 1000 }}\n")  # fmt: skip
    return f"{size}/{micros} µs/{threads}", ["--enable_batching", f"--batching_parameters_file={path}"]


def mlp_request(row: list[float], model: str = MLP) -> bytes:
    """A serialized PredictRequest of one MLP row (what h2load and the gRPC generator send)."""
    import numpy as np

    from orchestrator.protocol import methods as M
    from orchestrator.protocol.tensors import to_tensor_proto

    req = M.PREDICT.request()
    req.model_spec.name = model
    req.inputs["pixels"].CopyFrom(to_tensor_proto(np.asarray([row], dtype=np.float32)))
    return req.SerializeToString()


def summary(bench: str, measure: str, value: float, goal: str = "", unit: str = "×") -> None:
    """One line of `make bench`'s combined table (bench/all.py sets BENCH_SUMMARY to a file)."""
    path = os.environ.get("BENCH_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"bench": bench, "measure": measure, "value": value,
                                 "goal": goal, "unit": unit}) + "\n")  # fmt: skip


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


class Scraper(threading.Thread):
    """GETs the metrics page every `interval_s` until stopped; keeps each scrape's duration.

    Like Prometheus, it keeps its connection open between scrapes (`keep_alive=False`: a new
    connection each time, which also times the accept on a busy server)."""

    def __init__(self, url: str, interval_s: float = 0.1, keep_alive: bool = True) -> None:
        super().__init__(daemon=True)
        self.url, self.interval_s, self.keep_alive = url, interval_s, keep_alive
        self.times_ms: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        conn: http.client.HTTPConnection | None = None
        while not self.stop.wait(self.interval_s):
            t0 = time.perf_counter()
            if conn is None:
                conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
            conn.request("GET", parts.path, headers={"Accept": "text/plain"})
            resp = conn.getresponse()
            resp.read()
            self.times_ms.append((time.perf_counter() - t0) * 1e3)
            if not self.keep_alive or resp.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
