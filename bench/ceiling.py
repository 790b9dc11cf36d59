"""Protocol ceiling: tfs-model-server vs the same framework answering a fixed response.

The "ceiling" is what our server would do if our own work cost nothing: an aiohttp low-level server
returning a fixed JSON body (REST) and a grpc.aio generic handler returning fixed bytes (gRPC),
both on the same pinned core as our server. Load comes from outside Python, pinned to the other
core: wrk for REST and h2load (Debian's nghttp2-client) for gRPC with a prebuilt Predict body.
Ours and the ceiling alternate, round after round, in ONE run; the table shows medians and the
ratio ours / ceiling (the issue's goal is >= 0.8), both of the medians and the median of each round's
ratio (the ceiling's own rate moves between rounds). Our server runs side by side with the
default flags and with batching, by default two settings with batches as large as the
connections' requests together (16: a full batch closes at once): `16 0 1` (a batch closes at the
end of the event-loop round, so requests read together share one session call: what suits REST)
and `16 1000 1` (a batch waits up to 1 ms: what suits gRPC, whose calls grpc.aio hands the loop one
a round). Each also runs with TensorFlow's oneDNN kernels off (the spec's `onednn: false`, which
`tfsctl tune` tries; skip with --no-onednn-off). Also prints the CPU time per request of our
server (from /proc), which is what sets the scaling with more worker processes.

    .venv/bin/python bench/ceiling.py [--duration 5] [--rounds 3] [--connections 16] [--batching '32 0 1' ...]
    .venv/bin/python bench/ceiling.py --profile DIR   # py-spy flame graphs of ours under load
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
from bench._common import cpu_seconds, grpc_frame  # noqa: E402
from orchestrator.plan import ONEDNN_ENV  # noqa: E402
from tests.helpers import server as helpers  # noqa: E402
from tests.helpers.server import ServerProcess, free_port, wait_until  # noqa: E402

MODEL = "demo"
# Batches as large as the connections' requests together (a full batch closes at once), closed at
# the end of the loop round (what suits REST, whose reads come many a round) or after 1 ms (what
# suits gRPC: grpc.aio hands the loop one call a round). "{n}" is --connections.
DEFAULT_BATCHING = ("{n} 0 1", "{n} 1000 1")
SERVER_CORE, LOAD_CORE = "0", "1"
ROW = [5.1, 3.5, 1.4, 0.2]


def export_demo(base: Path) -> Path:
    """The demo's shape: 4 features -> 16 relu -> 3 softmax (untrained: speed does not care)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="features")
    hid = keras.layers.Dense(16, activation="relu")(inp)
    out = keras.layers.Dense(3, activation="softmax", name="probabilities")(hid)
    keras.Model(inp, out).export(str(base / "1"), verbose=False)
    return base


# -- fixed-answer servers (run as `python bench/ceiling.py --serve rest|grpc PORT FILE`) -----------
def serve_rest(port: int, body: bytes) -> None:
    import asyncio

    from aiohttp import web

    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        server = web.Server(handle, access_log=None)
        runner = web.ServerRunner(server, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_grpc(port: int, body: bytes) -> None:
    import asyncio

    import grpc

    async def predict(request: bytes, context: object) -> bytes:
        return body

    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(predict)},  # raw bytes in and out
    )

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


class Fixed:
    """A fixed-answer server process, pinned to the server core unless `pinned` is False."""

    def __init__(self, kind: str, body: bytes, *, pinned: bool = True) -> None:
        self.kind = kind
        self.pinned = pinned
        self.port = free_port()
        fd, self._body = tempfile.mkstemp(prefix="ceiling-")
        os.write(fd, body)
        os.close(fd)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Fixed:
        pin = ["taskset", "-c", SERVER_CORE] if self.pinned else []
        self.proc = subprocess.Popen(
            [*pin, sys.executable, __file__, "--serve", self.kind, str(self.port), self._body]
        )
        import socket

        def up() -> bool:
            if self.proc.poll() is not None:  # type: ignore[union-attr]
                raise helpers.ServerExited(f"{self.kind} ceiling server exited")
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_until(up, timeout_s=30, what=f"{self.kind} ceiling server on {self.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(20)
        os.unlink(self._body)


# -- load generators ---------------------------------------------------------------------------------
def wrk(url: str, body: str, *, duration: int, connections: int) -> dict[str, float]:
    return common.wrk(url, body, duration=duration, connections=connections, threads=1, core=LOAD_CORE)


def h2load(
    target: str, body_file: str, *, duration: int, connections: int, path: str
) -> dict[str, float]:
    return common.h2load(target, body_file, duration=duration, connections=connections, path=path,
                    core=LOAD_CORE)  # fmt: skip


# -- main --------------------------------------------------------------------------------------------
def build_bodies(grpc_target: str, rest_url: str) -> tuple[str, bytes, bytes, bytes]:
    """REST body, gRPC request, and the answers our server gives (the ceilings answer those)."""
    import urllib.request

    import grpc
    import numpy as np

    from orchestrator.protocol import methods as M
    from orchestrator.protocol.tensors import to_tensor_proto

    rest_body = json.dumps({"instances": [ROW]})
    req = urllib.request.Request(
        f"{rest_url}/v1/models/{MODEL}:predict",
        data=rest_body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        rest_answer = resp.read()
    preq = M.PREDICT.request()
    preq.model_spec.name = MODEL
    preq.inputs["features"].CopyFrom(to_tensor_proto(np.asarray([ROW], dtype=np.float32)))
    grpc_req = preq.SerializeToString()
    with grpc.insecure_channel(grpc_target) as ch:
        call = ch.unary_unary(M.PREDICT.path, request_serializer=None, response_deserializer=None)
        grpc_answer = call(grpc_req, timeout=30)
    return rest_body, rest_answer, grpc_req, grpc_answer


def run(args: argparse.Namespace) -> list[tuple[str, float, float, float, float]]:
    """(label, ours rps, ceiling rps, median of per-round ratios, our CPU µs a request) per row."""
    common.require("wrk", "h2load", "taskset")
    work = Path(tempfile.mkdtemp(prefix="bench-ceiling-"))
    base = export_demo(work / MODEL)
    helpers.SERVER_CMD = ["taskset", "-c", SERVER_CORE, *helpers.SERVER_CMD]
    variants: dict[str, list[str]] = {"": []}
    for setting in args.batching or [b.format(n=args.connections) for b in DEFAULT_BATCHING]:
        if setting.strip():
            label, flags = common.batching_flags(work, setting)
            variants[f", batching {label}"] = flags
    if args.onednn_off:  # what `tfsctl tune` may choose for a small model: TF's Eigen kernels
        for name, flags in list(variants.items()):
            variants[f"{name}, oneDNN off"] = flags
    envs = {name: ({ONEDNN_ENV: "0"} if name.endswith("oneDNN off") else None) for name in variants}
    model = [f"--model_name={MODEL}", f"--model_base_path={base}"]
    rows: list[tuple[str, float, float, float, float]] = []
    path = "/tensorflow.serving.PredictionService/Predict"
    try:
        with contextlib.ExitStack() as stack:
            servers = {name: stack.enter_context(ServerProcess(model + flags, env=envs[name]))
                       for name, flags in variants.items()}  # fmt: skip
            for srv in servers.values():
                srv.wait_until_available(MODEL)
            first = servers[""]
            rest_body, rest_answer, grpc_req, grpc_answer = build_bodies(
                first.grpc_target, first.rest_url
            )
            body_file = work / "predict.grpc"
            body_file.write_bytes(grpc_frame(grpc_req))
            keys = [(name, proto) for name in servers for proto in ("REST", "gRPC")]
            ours: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
            ratio: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
            cpu_us: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
            ceil: dict[str, list[float]] = {"REST": [], "gRPC": []}
            frest = stack.enter_context(Fixed("rest", rest_answer))
            fgrpc = stack.enter_context(Fixed("grpc", grpc_answer))
            for rnd in range(args.rounds):
                for proto in ("REST", "gRPC"):
                    if proto == "REST":
                        c = wrk(f"http://127.0.0.1:{frest.port}/", rest_body,
                                duration=args.duration, connections=args.connections)  # fmt: skip
                    else:
                        c = h2load(f"127.0.0.1:{fgrpc.port}", str(body_file), duration=args.duration,
                                   connections=args.connections, path=path)  # fmt: skip
                    ceil[proto].append(c["rps"])
                    for name, srv in servers.items():
                        assert srv.proc is not None
                        c0 = cpu_seconds(srv.proc.pid)
                        if proto == "REST":
                            url = f"{srv.rest_url}/v1/models/{MODEL}:predict"
                            s = wrk(url, rest_body, duration=args.duration, connections=args.connections)
                        else:
                            s = h2load(srv.grpc_target, str(body_file), duration=args.duration,
                                       connections=args.connections, path=path)  # fmt: skip
                        used = cpu_seconds(srv.proc.pid) - c0
                        ours[name, proto].append(s["rps"])
                        ratio[name, proto].append(s["rps"] / c["rps"])
                        # requests served in the ours-window (h2load's warm-up adds ~1 s of load)
                        served = s["rps"] * (args.duration + (1 if proto == "gRPC" else 0))
                        cpu_us[name, proto].append(used / max(served, 1) * 1e6)
                        if s["errors"] or c["errors"]:
                            print(f"warning: {proto}{name} round {rnd}: errors ours={s['errors']:.0f} "
                                  f"ceiling={c['errors']:.0f}", file=sys.stderr)  # fmt: skip
                        print(f"round {rnd} {proto}{name}: ours {s['rps']:.0f} rps, ceiling "
                              f"{c['rps']:.0f} rps", file=sys.stderr)  # fmt: skip
                        if args.profile and rnd == 0 and not name:
                            profile(srv.proc.pid, proto, args, f"{srv.rest_url}/v1/models/{MODEL}:predict",
                                    rest_body, srv.grpc_target, str(body_file), path)  # fmt: skip
            for name, proto in keys:
                rows.append((f"{proto} Predict{name}", statistics.median(ours[name, proto]),
                             statistics.median(ceil[proto]), statistics.median(ratio[name, proto]),
                             statistics.median(cpu_us[name, proto])))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def profile(
    pid: int,
    proto: str,
    args: argparse.Namespace,
    url: str,
    rest_body: str,
    grpc_target: str,
    body_file: str,
    path: str,
) -> None:
    """py-spy flame graph (svg) and top functions (raw collapsed stacks) of ours under load."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install -e '.[bench]'")
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(args.duration),
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                fmt,
                "--output",
                str(out / f"{proto.lower()}.{ext}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fmt, ext in (("flamegraph", "svg"), ("raw", "txt"))
    ]
    time.sleep(0.5)  # let py-spy attach before the load starts (it records for a fixed time)
    if proto == "REST":
        wrk(url, rest_body, duration=args.duration, connections=args.connections)
    else:
        h2load(
            grpc_target, body_file, duration=args.duration, connections=args.connections, path=path
        )
    for p in procs:
        p.wait(args.duration + 60)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--profile", default="", help="directory for py-spy flame graphs")
    ap.add_argument("--no-onednn-off", dest="onednn_off", action="store_false",
                    help="skip the rows of our server with TF_ENABLE_ONEDNN_OPTS=0")
    ap.add_argument("--batching", action="append", metavar="'SIZE MICROS THREADS'",
                    help="also measure our server with --enable_batching and this batching file "
                         "(max_batch_size, batch_timeout_micros, num_batch_threads); repeat for "
                         f"several; '' for none (default: {' and '.join(DEFAULT_BATCHING)}, n the connections)")
    ap.add_argument(
        "--serve", nargs=3, metavar=("KIND", "PORT", "BODY_FILE"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.serve:
        kind, port, body_file = args.serve
        body = Path(body_file).read_bytes()
        (serve_rest if kind == "rest" else serve_grpc)(int(port), body)
        return 0
    rows = run(args)
    load = os.getloadavg()[0]
    print(
        f"\nDemo model (4 floats in, 3 out), {args.connections} connections, server and ceiling "
        f"pinned to core {SERVER_CORE}, load generator to core {LOAD_CORE}, medians of "
        f"{args.rounds} interleaved rounds of {args.duration}s, load average {load:.1f}\n"
    )
    print("| path | ours rps | ceiling rps | ours / ceiling (medians) | ours / ceiling (median of "
          "rounds) | goal | our CPU µs / request |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, o, ceiling, paired, us in rows:
        print(f"| {label} | {o:.0f} | {ceiling:.0f} | {o / ceiling:.2f} | {paired:.2f} | 0.8 | {us:.0f} |")
        common.summary("ceiling", f"{label}: ours / ceiling (pinned, median of rounds, load average "
                       f"{load:.1f})", paired, "≥ 0.8×")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
