"""Measure a few batching settings on the user's model with the real server; pick the best.

Each setting starts our `tfs-model-server` on free loopback ports with the spec's model (newest
version), sends one-row predicts from `clients` connections for `duration_s` over the protocol
the clients use: REST with wrk, or gRPC with h2load (Debian's nghttp2-client) posting a prebuilt
Predict body. Both load generators are outside Python, so they do not compete for the
interpreter. It keeps rows/s and p99. The protocol matters: REST reads arrive many a loop round,
so batches that close at the end of the round pay; grpc.aio hands the server one call a round,
so gRPC needs a batch window of a millisecond or two. The best setting is the fastest whose p99 stays within the budget; no batching is one of the
candidates. The request is synthesized from the signature (zeros of each input's shape with the
batch dimension 1) or taken from a file.

A second stage tries TensorFlow's own CPU settings on the best batching setting: one intra-op
thread (a small batch split across cores costs more in wake-ups than it saves) and oneDNN's
kernels off (TF_ENABLE_ONEDNN_OPTS=0). Which wins depends on the model: on this project's 2-core
machine oneDNN off halved a small dense model's session call and made a CNN's 2.5x slower.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.errors import RuntimeFailure
from orchestrator.launch import start_server
from orchestrator.plan import ONEDNN_ENV
from orchestrator.protocol import wire
from orchestrator.spec import Spec

PROTOCOLS = {"rest": ("wrk", "wrk"), "grpc": ("h2load", "nghttp2-client")}  # tool, Debian package
_NUMERIC = {
    "DT_FLOAT": 0.0, "DT_DOUBLE": 0.0, "DT_HALF": 0.0, "DT_BFLOAT16": 0.0,
    "DT_INT8": 0, "DT_INT16": 0, "DT_INT32": 0, "DT_INT64": 0,
    "DT_UINT8": 0, "DT_UINT16": 0, "DT_UINT32": 0, "DT_UINT64": 0, "DT_BOOL": False,
}  # fmt: skip


@dataclass(frozen=True)
class Setting:
    """One batching configuration; max_batch_size 0 means batching off."""

    max_batch_size: int = 0
    batch_timeout_micros: int = 0
    num_batch_threads: int = 0
    intra_op: int = 0  # threads.intra_op (0: TensorFlow's default, one per core)
    onednn: bool | None = None  # the spec's `onednn` (None: TensorFlow's default)

    @property
    def label(self) -> str:
        if not self.max_batch_size:
            text = "no batching"
        else:
            text = (
                f"{self.max_batch_size} rows, {self.batch_timeout_micros} µs, "
                f"{self.num_batch_threads} thread{'s' if self.num_batch_threads > 1 else ''}"
            )
        if self.intra_op:
            text += f", intra-op {self.intra_op}"
        if self.onednn is not None:
            text += f", oneDNN {'on' if self.onednn else 'off'}"
        return text

    def spec_lines(self) -> str:
        if not self.max_batch_size:
            out = "batching:\n  enabled: false\n"
        else:
            out = (
                "batching:\n  enabled: true\n"
                f"  max_batch_size: {self.max_batch_size}\n"
                f"  batch_timeout_micros: {self.batch_timeout_micros}\n"
                f"  num_batch_threads: {self.num_batch_threads}\n"
            )
        if self.intra_op:
            out += f"threads:\n  intra_op: {self.intra_op}\n"
        if self.onednn is not None:
            out += f"onednn: {'true' if self.onednn else 'false'}\n"
        return out


@dataclass(frozen=True)
class Result:
    setting: Setting
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def candidates(clients: int, cpus: int) -> list[Setting]:
    """No batching, then batches as large as the clients on one thread: closed at the end of the
    server's loop round (timeout 0, what pays for small models), after a short and after a long
    timeout; and the short timeout on one thread per CPU."""
    size = max(1, clients)
    out = [Setting(), Setting(size, 0, 1), Setting(size, 1000, 1), Setting(size, 5000, 1)]
    if cpus > 1:
        out.append(Setting(size, 1000, cpus))
    return out


def tensorflow_candidates(base: Setting, cpus: int) -> list[Setting]:
    """The second stage, on the best batching setting: oneDNN off, and (with several cores)
    one intra-op thread, alone and with oneDNN off."""
    out = [replace(base, onednn=False)]
    if cpus > 1:
        out += [replace(base, intra_op=1), replace(base, intra_op=1, onednn=False)]
    return out


def best(results: list[Result], p99_budget_ms: float) -> Result | None:
    ok = [r for r in results if r.p99_ms <= p99_budget_ms and not r.errors]
    return max(ok, key=lambda r: r.rows_per_s) if ok else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def newest_version(spec: Spec) -> Path:
    base = Path(spec.base_path)
    versions = sorted(
        (int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True
    ) if base.is_dir() else []  # fmt: skip
    if not versions:
        raise RuntimeFailure(
            f"{base} holds no version folder (1/, 2/, ...)",
            fix=f"export a SavedModel into {base}/1 (tfsctl model inspect checks one)",
        )
    return base / str(versions[0])


class _Server:
    """tfs-model-server with one batching setting, stopped on exit."""

    def __init__(self, spec: Spec, setting: Setting, work: Path) -> None:
        self.port = _free_port()
        self.grpc_port = _free_port()
        args = [
            f"--port={self.grpc_port}", f"--rest_api_port={self.port}",
            f"--model_name={spec.name}", f"--model_base_path={Path(spec.base_path).resolve()}",
        ]  # fmt: skip
        if setting.max_batch_size:
            f = work / f"batching-{setting.max_batch_size}-{setting.batch_timeout_micros}.config"
            f.write_text(
                f"max_batch_size {{ value: {setting.max_batch_size} }}\n"
                f"batch_timeout_micros {{ value: {setting.batch_timeout_micros} }}\n"
                f"num_batch_threads {{ value: {setting.num_batch_threads} }}\n"
                "max_enqueued_batches { value: 1000 }\n"
            )
            args += ["--enable_batching", f"--batching_parameters_file={f}"]
        if setting.intra_op:
            args.append(f"--tensorflow_intra_op_parallelism={setting.intra_op}")
        self.log = work / "server.log"
        env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ, "TFS_BIND_HOST": "127.0.0.1"}
        if setting.onednn is not None:
            env[ONEDNN_ENV] = "1" if setting.onednn else "0"
        with open(self.log, "wb") as fh:
            self.proc = start_server([sys.executable, "-m", "orchestrator.server.main"], args,
                                     env=env, stdout=fh)  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/v1/models/{spec.name}"

    def wait_available(self, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    states = [v["state"] for v in json.load(r).get("model_version_status", [])]
                if "AVAILABLE" in states:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        tail = self.log.read_text(errors="replace")
        raise RuntimeFailure(
            "the server did not make the model AVAILABLE",
            fix="check the model with `tfsctl model inspect` and the log lines below",
            logs=tail,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def _numeric_inputs(url: str, why: str, fix: str) -> dict[str, tuple[str, list[int]]]:
    """serving_default's inputs (the server's metadata): alias -> (dtype, dims); RuntimeFailure
    with `why` and `fix` for an input that is not numeric."""
    with urllib.request.urlopen(url + "/metadata", timeout=30) as r:
        meta = json.load(r)
    sig = meta["metadata"]["signature_def"]["signature_def"].get("serving_default")
    if sig is None:
        raise RuntimeFailure("the model has no serving_default signature",
                            fix="pass a REST request for another signature with --data FILE")  # fmt: skip
    out = {}
    for alias, info in sig["inputs"].items():
        dtype = info.get("dtype", "")
        if dtype not in _NUMERIC:
            raise RuntimeFailure(f"input {alias!r} is {dtype}: {why}", fix=fix)
        out[alias] = (dtype, [int(d.get("size", -1)) for d in info.get("tensor_shape", {}).get("dim", [])])
    return out


def synthetic_request(url: str) -> str:
    """{"instances": [one row]} from serving_default's inputs: zeros, batch dimension 1."""
    row: dict[str, Any] = {}
    inputs = _numeric_inputs(url, "no synthetic value for it",
                             "pass one request as TF Serving's REST JSON with --data FILE")  # fmt: skip
    for name, (dtype, dims) in inputs.items():
        value: Any = _NUMERIC[dtype]
        for d in reversed(dims[1:]):
            value = [value] * (d if d > 0 else 1)
        row[name] = value
    one = next(iter(row.values())) if len(row) == 1 else row
    return json.dumps({"instances": [one]})


def grpc_request(url: str, name: str, data: str | None) -> tuple[bytes, int]:
    """(a serialized PredictRequest for serving_default, its rows): from `data` (TF Serving REST
    JSON, `instances` or `inputs`), else zeros of the signature's shapes with batch dimension 1.
    `data`'s values are cast to serving_default's input dtypes; another signature is refused."""
    import numpy as np

    from orchestrator.protocol import methods
    from orchestrator.protocol.tensors import DataType, enum_to_numpy_dtype, to_tensor_proto

    inputs = _numeric_inputs(url, "gRPC tuning builds numeric tensors only",
                             "tune over REST (--protocol rest) with --data FILE")  # fmt: skip
    kinds = {alias: (enum_to_numpy_dtype(DataType.Value(dtype)), dims)
             for alias, (dtype, dims) in inputs.items()}  # fmt: skip
    values: dict[str, Any] = {}
    if data is None:
        for alias, (_, dims) in kinds.items():
            values[alias] = np.zeros([1, *(d if d > 0 else 1 for d in dims[1:])])
    else:
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise RuntimeFailure(f"--data is not JSON: {e}", fix="give one TF Serving REST request") from None
        if isinstance(doc, dict) and doc.get("signature_name", "serving_default") not in ("", "serving_default"):
            raise RuntimeFailure("gRPC tuning sends serving_default's inputs; --data names "
                                 f"signature {doc['signature_name']!r}",
                                 fix="tune that signature over REST (--protocol rest)")  # fmt: skip
        rows = doc.get("instances") if isinstance(doc, dict) else None
        cols = doc.get("inputs") if isinstance(doc, dict) else None
        if isinstance(rows, list) and rows and all(isinstance(x, dict) for x in rows):
            values = {a: [x.get(a) for x in rows] for a in kinds}
        elif isinstance(rows, list) and rows and len(kinds) == 1:
            values = {next(iter(kinds)): rows}
        elif isinstance(cols, dict):
            values = {a: cols.get(a) for a in kinds}
        elif cols is not None and len(kinds) == 1:
            values = {next(iter(kinds)): cols}
        else:
            raise RuntimeFailure("--data is not a predict request this tool can turn into gRPC",
                                fix='give {"instances": [...]} or {"inputs": ...} of numbers')  # fmt: skip
    req = methods.PREDICT.request()
    req.model_spec.name = name
    req.model_spec.signature_name = "serving_default"
    count = 1
    for alias, value in values.items():
        try:
            arr = np.asarray(value, dtype=kinds[alias][0])
        except (TypeError, ValueError) as e:
            raise RuntimeFailure(f"input {alias!r} of --data is not numeric: {e}",
                                fix="give numbers for every input in --data") from None  # fmt: skip
        count = max(1, arr.shape[0]) if arr.ndim else 1
        req.inputs[alias].CopyFrom(to_tensor_proto(arr))
    return req.SerializeToString(), count


def h2load(target: str, path: str, body: bytes, clients: int, duration_s: int,
           work: Path) -> dict[str, float]:  # fmt: skip
    """Unary gRPC calls from h2load, one in flight per connection: rps, p50 / p99 from its
    per-request log, and calls that did not succeed."""
    frame = work / "predict.grpc"
    frame.write_bytes(wire.grpc_frame(body))
    log = work / "h2load.log"
    out = subprocess.run(
        ["h2load", "-c", str(clients), "-m", "1", "-t", "1", "-D", str(duration_s),
         "--warm-up-time=1", "-d", str(frame), "-H", "content-type: application/grpc",
         "-H", "te: trailers", "--log-file", str(log), f"http://{target}{path}"],
        capture_output=True, text=True, timeout=duration_s + 60, check=False,
    ).stdout  # fmt: skip
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if rps is None or done is None:
        raise RuntimeFailure(f"h2load gave no result:\n{out}", fix="run the same h2load command by hand")
    latencies = sorted(
        int(parts[2]) / 1000 for parts in (line.split() for line in log.read_text().splitlines())
        if len(parts) >= 3 and parts[1] == "200"
    )  # fmt: skip
    pick = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]) if latencies \
        else (lambda q: float("nan"))  # fmt: skip
    return {"rps": float(rps.group(1)), "p50": pick(0.5), "p99": pick(0.99),
            "errors": float(int(done.group(1)) - int(done.group(2)))}  # fmt: skip


def _rows(body: str) -> int:
    try:
        doc = json.loads(body)
        return max(1, len(doc["instances"])) if isinstance(doc, dict) and "instances" in doc else 1
    except (ValueError, TypeError):
        return 1


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def wrk(url: str, body: str, clients: int, duration_s: int, work: Path) -> dict[str, float]:
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{duration_s}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, timeout=duration_s + 60, check=False,
    ).stdout  # fmt: skip
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeFailure(f"wrk gave no result:\n{out}", fix="run the same wrk command by hand")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p50 = re.search(r"\s50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"\s99%\s+([\d.]+\w+)", out)
    return {
        "rps": float(rps.group(1)),
        "p50": _ms(p50.group(1)) if p50 else float("nan"),
        "p99": _ms(p99.group(1)) if p99 else float("nan"),
        "errors": (int(non2xx.group(1)) if non2xx else 0)
        + (sum(int(x) for x in errs.groups()) if errs else 0),
    }


def tune(
    spec: Spec,
    *,
    clients: int,
    duration_s: int,
    data: str | None = None,
    progress: Any = None,
    p99_budget_ms: float | None = None,
    protocol: str = "rest",
) -> list[Result]:
    """Measure every candidate setting in turn, one server at a time; with `p99_budget_ms`, then
    TensorFlow's CPU settings on the best batching setting within it (`tensorflow_candidates`).
    `protocol`: "rest" (wrk) or "grpc" (h2load)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    tool, package = PROTOCOLS[protocol]
    if shutil.which(tool) is None:
        raise RuntimeFailure(f"{tool} is not installed (the {protocol} load generator)",
                            fix=f"apt-get install {package} (or bash scripts/setup_system.sh)")  # fmt: skip
    newest_version(spec)
    results: list[Result] = []
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="tfsctl-tune-") as tmp:
        work = Path(tmp)
        # Batches as large as every client's request together (a task never splits).
        rows = _rows(data) if data is not None else 1
        for setting in candidates(clients * rows, cpus):
            results.append(_measure(spec, setting, work, clients, duration_s, data, progress, protocol))
        chosen = best(results, p99_budget_ms) if p99_budget_ms is not None else None
        if chosen is not None:
            for setting in tensorflow_candidates(chosen.setting, cpus):
                results.append(_measure(spec, setting, work, clients, duration_s, data, progress, protocol))
    return results


def _measure(spec: Spec, setting: Setting, work: Path, clients: int, duration_s: int,
             data: str | None, progress: Any, protocol: str = "rest") -> Result:  # fmt: skip
    if progress is not None:
        progress(setting)
    server = _Server(spec, setting, work)
    try:
        server.wait_available(spec.health.deadline_s)
        if protocol == "grpc":
            return _measure_grpc(spec, setting, server, work, clients, duration_s, data)
        body = data if data is not None else synthetic_request(server.url)
        req = urllib.request.Request(server.url + ":predict", data=body.encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            urllib.request.urlopen(req, timeout=60).close()  # warm, and check it works
        except urllib.error.HTTPError as e:
            raise RuntimeFailure(
                f"the model refused the request: {e.read().decode(errors='replace')}",
                fix="pass a request the model takes with --data FILE",
            ) from None
        stats = wrk(server.url + ":predict", body, clients, duration_s, work)
    finally:
        server.stop()
    return Result(setting, stats["rps"] * _rows(body), stats["p50"], stats["p99"],
                  int(stats["errors"]))  # fmt: skip



def _measure_grpc(spec: Spec, setting: Setting, server: _Server, work: Path, clients: int,
                  duration_s: int, data: str | None) -> Result:  # fmt: skip
    import grpc

    from orchestrator.protocol import methods

    body, rows = grpc_request(server.url, spec.name, data)
    target = f"127.0.0.1:{server.grpc_port}"
    with grpc.insecure_channel(target) as channel:  # warm, and check it works
        call = channel.unary_unary(methods.PREDICT.path, request_serializer=None,
                                   response_deserializer=None)  # fmt: skip
        try:
            call(body, timeout=60)
        except grpc.RpcError as e:
            raise RuntimeFailure(f"the model refused the request: {e.code().name}: {e.details()}",
                                 fix="pass a request the model takes with --data FILE") from None  # fmt: skip
    stats = h2load(target, methods.PREDICT.path, body, clients, duration_s, work)
    return Result(setting, stats["rps"] * rows, stats["p50"], stats["p99"], int(stats["errors"]))
