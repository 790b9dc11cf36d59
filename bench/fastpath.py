"""The REST fast path's own CPU per request, in one process, without sockets or a load generator.

The server is built in-process (`ModelServer` with the given flags; its ports bind on loopback but
no traffic goes to them). `--connections` protocol instances of its REST server each get a fake
transport that keeps what is written. Each round hands every connection one plain predict
(`data_received`, as uvloop would), then runs the event loop until every answer is written; the
answers are checked. Reported: CPU seconds of the process (all threads) per request, the minimum
over `--repeats` runs of `--rounds` rounds, so the noise of a shared machine mostly drops out and
two trees can be compared in one run (`--before DIR` runs the `orchestrator` package under DIR in
a second process, alternating). The process is pinned to core 0 like the server in
bench/ceiling.py. What it leaves out: the socket reads and writes and uvloop's
dispatch, which the server pays for as much as the protocol ceiling does (bench/ceiling.py).

    .venv/bin/python bench/fastpath.py [--batching "32 0 1" | 32,0,1] [--connections 16] [--before DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
# One core, as the server in bench/ceiling.py: TensorFlow then also runs its ops on one thread.
PIN = ["taskset", "-c", "0"] if shutil.which("taskset") else []
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class FakeTransport(asyncio.Transport):
    """Keeps what the protocol writes; reading can be paused and resumed."""

    waiting: ClassVar[list[Any]] = [0, None]  # answers due this round, the future to set then

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))
        due = FakeTransport.waiting
        due[0] -= 1
        if due[0] == 0 and due[1] is not None:
            due[1].set_result(None)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def request(model: str, body: bytes) -> bytes:
    return (b"POST /v1/models/%s:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (model.encode(), len(body), body))  # fmt: skip


async def measure(flags: list[str], model: str, body: bytes, args: argparse.Namespace) -> list[float]:
    from orchestrator.server import flags as flagmod
    from orchestrator.server.main import ModelServer

    opts = flagmod.parse(flags)
    flagmod.validate(opts)
    server = ModelServer(opts)
    await server.start()
    try:
        deadline = time.monotonic() + 300
        while True:  # the model loads in the background after start()
            try:
                server.core.servable(model, None, None)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        factory = server._rest_runner.server  # type: ignore[attr-defined]
        conns = []
        for _ in range(args.connections):
            proto = factory()
            transport = FakeTransport()
            proto.connection_made(transport)
            conns.append((proto, transport))
        data = request(model, body)

        async def rounds(n: int) -> None:
            loop = asyncio.get_running_loop()
            for _ in range(n):
                due = FakeTransport.waiting
                due[:] = [len(conns), loop.create_future()]
                for proto, _t in conns:  # from a callback, outside any task, as uvloop calls it
                    loop.call_soon(proto.data_received, data)
                await asyncio.wait_for(due[1], 60)
                for _p, t in conns:
                    assert len(t.out) == 1 and t.out[0].startswith(b"HTTP/1.1 200"), t.out[:1]
                    t.out.clear()

        await rounds(50)  # warm: plans, the run-cost estimate, caches
        results = []
        for _ in range(args.repeats):
            c0 = time.process_time()
            await rounds(args.rounds)
            results.append((time.process_time() - c0) / (args.rounds * args.connections) * 1e6)
        for proto, _t in conns:
            proto.connection_lost(None)
        return results
    finally:
        await server.stop()


def child(args: argparse.Namespace) -> int:
    import uvloop

    flags = json.loads(args.child)
    model = flags.pop(0)
    body = flags.pop(0).encode()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(measure(flags, model, body, args))
    print(json.dumps(results))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--runs", type=int, default=3, help="processes per tree, alternating")
    ap.add_argument("--batching", default="", metavar="'SIZE MICROS THREADS'")
    ap.add_argument("--before", default="", help="folder holding the orchestrator package to compare")
    ap.add_argument("--model", choices=("demo", "mlp"), default="demo")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, str(ROOT))
    from bench import _common as common
    from bench.ceiling import export_demo
    from tests.helpers.server import free_port

    work = Path(tempfile.mkdtemp(prefix="bench-fastpath-"))
    if args.model == "mlp":
        base, body = common.export_mlp(work / common.MLP), common.mlp_body()
    else:
        base, body = export_demo(work / "demo"), json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]]})
    name = base.name
    flags = [f"--model_name={name}", f"--model_base_path={base}", f"--port={free_port()}",
             f"--rest_api_port={free_port()}"]  # fmt: skip
    label = "no batching"
    if args.batching:
        label, extra = common.batching_flags(work, args.batching.replace(",", " "))
        flags += extra
    trees = {"this tree": str(ROOT)}
    if args.before:
        trees["before"] = str(Path(args.before).resolve())
    best: dict[str, list[float]] = {t: [] for t in trees}
    for run in range(args.runs):
        for tree in sorted(trees, reverse=run % 2 == 1):
            out = subprocess.run(
                [*PIN, sys.executable, str(Path(__file__).resolve()), "--child", json.dumps([name, body, *flags]),
                 "--connections", str(args.connections), "--rounds", str(args.rounds),
                 "--repeats", str(args.repeats)],
                env={**os.environ, "PYTHONPATH": trees[tree], "TFS_BIND_HOST": "127.0.0.1"},
                capture_output=True, text=True, timeout=1800, check=False,
            )  # fmt: skip
            if out.returncode != 0:
                print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
                return 1
            per = json.loads(out.stdout.strip().splitlines()[-1])
            best[tree].append(min(per))
            print(f"run {run} {tree}: min {min(per):.1f} µs, all {[round(x, 1) for x in per]}",
                  file=sys.stderr)  # fmt: skip
    print(f"\n{args.model} model, {label}, {args.connections} connections, {args.rounds} rounds "
          f"x {args.repeats} repeats, minimum per process run\n")  # fmt: skip
    print("| tree | CPU µs / request (best run) | runs |")
    print("| --- | ---: | --- |")
    for tree, values in best.items():
        print(f"| {tree} | {min(values):.1f} | {' '.join(f'{v:.1f}' for v in values)} |")
    common.summary("fastpath", f"REST fast path, our CPU a request in-process ({args.model}, {label})",
                   min(best["this tree"]), unit=" µs")  # fmt: skip
    if args.before:
        print(f"\nthis tree / before: {min(best['this tree']) / min(best['before']):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
