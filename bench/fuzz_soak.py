"""Hostile-input soak against a running TF Serving (ours or upstream): counts answers, watches RSS.

Mixes valid predicts with the bad inputs a careless or hostile client sends (random bytes, deep
nesting, numbers too big for a double, gzip bombs, unsupported encodings, non-ASCII versions,
huge declared gRPC shapes, unparsable gRPC bytes) for a bounded time, and prints every few
seconds the counts of 2xx / 4xx / 5xx (gRPC: OK / client-side codes / INTERNAL-UNKNOWN-...) and
the server's RSS when its pid is given. Exit status 1 when any 5xx (or UNKNOWN) was seen, or a
valid request failed.

Loopback only: endpoints must resolve to 127.0.0.0/8 or ::1.

    .venv/bin/python bench/fuzz_soak.py --rest http://127.0.0.1:8501 --grpc 127.0.0.1:8500 \\
        --model half_plus_two --valid '{"instances": [1.0]}' --duration-s 60 --pid $(pgrep -n ...)
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import random
import socket
import sys
import threading
import time
import urllib.parse
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import requests

MAX_DURATION_S = 3600
MAX_REQUESTS = 1_000_000
GRPC_SERVER_FAULTS = {"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNIMPLEMENTED"}
GRPC_UNAVAILABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}


def loopback_only(host: str) -> None:
    for info in socket.getaddrinfo(host, None):
        address = ipaddress.ip_address(info[4][0])
        if not address.is_loopback:
            raise SystemExit(f"error: {host} resolves to {address}, not loopback\n"
                             "  fix: point the soak at 127.0.0.1 (or ::1) only")


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _gzip_bomb(mib: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join(c.compress(block) for _ in range(mib)) + c.flush()


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rest = args.rest.rstrip("/") if args.rest else None
        self.model = args.model
        self.valid = args.valid.encode()
        self.counts: Counter[str] = Counter()
        self.valid_failures: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.lock = threading.Lock()
        self.sent = 0
        self.stop_at = time.monotonic() + min(args.duration_s, MAX_DURATION_S)
        self.bomb = _gzip_bomb(args.bomb_mib)
        self.grpc_channel: Any = None
        if args.grpc:
            import grpc

            self.grpc_channel = grpc.insecure_channel(
                args.grpc, options=[("grpc.max_send_message_length", -1)]
            )

    # -- the request mix ----------------------------------------------------------------------
    def rest_cases(self, rnd: random.Random) -> list[tuple[str, Callable[[requests.Session], int]]]:
        m = self.model
        url = f"{self.rest}/v1/models/{m}:predict"

        def post(body: bytes, path: str = url, **headers: str) -> Callable[[requests.Session], int]:
            return lambda s: s.post(path, data=body, headers=headers, timeout=30).status_code

        depth = rnd.choice([65, 1000, 5000])
        return [
            ("valid", post(self.valid)),
            ("random bytes", post(rnd.randbytes(rnd.randint(0, 512)))),
            ("deep nesting", post(b'{"instances":' + b"[" * depth + b"1" + b"]" * depth + b"}")),
            ("deep object", post(b'{"instances":[1],"x":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}")),
            ("huge integer", post(b'{"instances":[' + b"9" * rnd.randint(300, 6000) + b"]}")),
            ("1e999", post(b'{"inputs":[1e999]}')),
            ("NaN + overflow", post(b'{"inputs":[NaN, -1e999]}')),
            ("bad gzip", post(rnd.randbytes(64), **{"Content-Encoding": "gzip"})),
            ("gzip bomb", post(self.bomb, **{"Content-Encoding": "gzip"})),
            ("br", post(b"\x0b\x02\x80{}\x03", **{"Content-Encoding": "br"})),
            ("non-ASCII version", post(self.valid, f"{self.rest}/v1/models/{m}/versions/\u0661:predict")),
            ("wrong types", post(json.dumps({"instances": ["a", {"b64": "!!"}, None]}).encode())),
            ("b64 junk", post(json.dumps({"inputs": {"b64": base64.b64encode(rnd.randbytes(16)).decode()}}).encode())),
            ("status", lambda s: s.get(f"{self.rest}/v1/models/{m}", timeout=30).status_code),
        ]

    def grpc_cases(self, rnd: random.Random) -> list[tuple[str, Callable[[], str]]]:
        import grpc

        from orchestrator.protos import apis_pb2

        def call(method: str, data: bytes, expected: str = "") -> Callable[[], str]:
            fn = self.grpc_channel.unary_unary(
                f"/tensorflow.serving.PredictionService/{method}",
                request_serializer=lambda b: b, response_deserializer=lambda b: b,
            )

            def run() -> str:
                try:
                    fn(data, timeout=30)
                    return "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                    return "EXPECTED" if code == expected else code

            return run

        huge = apis_pb2.PredictRequest()
        huge.model_spec.name = self.model
        t = huge.inputs["x"]
        t.dtype = 1
        t.tensor_shape.dim.add().size = 2**36
        return [
            # bytes that do not parse: INTERNAL, as C++ gRPC answers (not a server fault)
            ("grpc random bytes", call(rnd.choice(["Predict", "Classify", "Regress"]),
                                       b"\xff\xff\xff" + rnd.randbytes(64), expected="INTERNAL")),
            ("grpc huge shape", call("Predict", huge.SerializeToString())),
        ]

    # -- running --------------------------------------------------------------------------------
    def record(self, name: str, outcome: str) -> None:
        with self.lock:
            self.counts[outcome] += 1
            if name == "valid" and outcome != "2xx":
                self.valid_failures[outcome] += 1
            if outcome in ("5xx", "grpc-server-fault"):
                self.examples.setdefault(name, outcome)

    def worker(self, seed: int) -> None:
        rnd = random.Random(seed)
        with requests.Session() as session:
            while time.monotonic() < self.stop_at:
                with self.lock:
                    if self.sent >= self.args.max_requests:
                        return
                    self.sent += 1
                if self.grpc_channel is not None and (not self.rest or rnd.random() < 0.2):
                    name, grpc_fn = rnd.choice(self.grpc_cases(rnd))
                    code = grpc_fn()
                    outcome = ("grpc-ok" if code == "OK" else "grpc-client-error" if code == "EXPECTED"
                               else "grpc-server-fault"
                               if code in GRPC_SERVER_FAULTS else "grpc-unavailable"
                               if code in GRPC_UNAVAILABLE else "grpc-client-error")
                    self.record(name, outcome)
                    continue
                cases = self.rest_cases(rnd)
                name, rest_fn = cases[0] if rnd.random() < self.args.valid_share else rnd.choice(cases[1:])
                try:
                    status = rest_fn(session)
                    outcome = f"{status // 100}xx"
                except requests.RequestException:
                    outcome = "connection error"
                self.record(name, outcome)

    def run(self) -> dict[str, Any]:
        threads = [threading.Thread(target=self.worker, args=(self.args.seed + i,), daemon=True)
                   for i in range(self.args.concurrency)]
        start = time.monotonic()
        for t in threads:
            t.start()
        timeline = []
        while any(t.is_alive() for t in threads):
            time.sleep(min(self.args.report_every_s, max(0.05, self.stop_at - time.monotonic())))
            with self.lock:
                row = {"t_s": round(time.monotonic() - start, 1), "rss_mib": rss_mib(self.args.pid),
                       **dict(self.counts)}
            timeline.append(row)
            if not self.args.json:
                print(" ".join(f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items() if v is not None), flush=True)
        for t in threads:
            t.join()
        rss = [r["rss_mib"] for r in timeline if r["rss_mib"] is not None]
        return {
            "requests": sum(self.counts.values()),
            "counts": dict(self.counts),
            "valid_failures": dict(self.valid_failures),
            "server_faults": self.examples,
            "rss_mib": {"first": rss[0], "last": rss[-1], "max": max(rss)} if rss else None,
            "timeline": timeline,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rest", help="REST endpoint, e.g. http://127.0.0.1:8501")
    p.add_argument("--grpc", help="gRPC endpoint, e.g. 127.0.0.1:8500")
    p.add_argument("--model", required=True)
    p.add_argument("--valid", default='{"instances": [1.0]}', help="a body the model accepts")
    p.add_argument("--valid-share", type=float, default=0.3, help="share of valid requests")
    p.add_argument("--duration-s", type=float, default=30.0, help=f"at most {MAX_DURATION_S}")
    p.add_argument("--max-requests", type=int, default=100_000, help=f"at most {MAX_REQUESTS}")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--pid", type=int, help="server process whose RSS to watch (local servers)")
    p.add_argument("--bomb-mib", type=int, default=64, help="inflated size of the gzip bomb")
    p.add_argument("--report-every-s", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON summary only")
    args = p.parse_args(argv)
    if not args.rest and not args.grpc:
        p.error("give --rest and/or --grpc")
    args.max_requests = min(args.max_requests, MAX_REQUESTS)
    args.concurrency = max(1, min(args.concurrency, 64))
    if args.rest:
        loopback_only(urllib.parse.urlsplit(args.rest).hostname or "")
    if args.grpc:
        loopback_only(args.grpc.rsplit(":", 1)[0].strip("[]"))
    summary = Soak(args).run()
    if args.json:
        print(json.dumps(summary))
    else:
        print(json.dumps({k: v for k, v in summary.items() if k != "timeline"}, indent=2))
    failed = summary["server_faults"] or summary["valid_failures"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    sys.exit(main())
