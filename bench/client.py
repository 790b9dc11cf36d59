"""Our TF Serving client against TensorFlow's, side by side, every ratio measured in one run.

1. Import: time and peak RSS of `orchestrator.client` (+ GrpcClient, all a gRPC call needs)
   vs `tensorflow_serving.apis.prediction_service_pb2_grpc`, each in fresh processes (median).
2. Tensors, float32 1x10, 1000x128, 64x224x224x3: numpy -> TensorProto and back, ours vs
   tf.make_tensor_proto / tf.make_ndarray; and numpy -> wire bytes -> numpy (what a call does).
   The floor is one memcpy, `ndarray.tobytes`. Best of several repeats.
3. Predict round trip against our tfs-model-server: GrpcClient.predict (numpy in and out) vs
   the upstream stub with a prebuilt PredictRequest (protobuf out, nothing decoded), with the
   server answering in typed *_val fields (TF Serving's default) and in tensor_content. Calls
   alternate (ABBA) between the two; overhead = median of the paired differences / median raw.

    .venv/bin/python bench/client.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

IMPORT_PROBE = """
import resource, sys, time
t = time.perf_counter()
{stmt}
dt = time.perf_counter() - t
print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'tensorflow' in sys.modules)
"""
OURS_IMPORT = "import orchestrator.client; orchestrator.client.GrpcClient"
UPSTREAM_IMPORT = "import tensorflow_serving.apis.prediction_service_pb2_grpc"


def _probe(stmt: str) -> tuple[float, float, bool]:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE.format(stmt=stmt)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    ).stdout.split()
    return float(out[0]), float(out[1]), out[2] == "True"


def bench_import(runs: int) -> dict[str, Any]:
    ours, theirs = [], []
    for _ in range(runs):  # alternate, so machine noise hits both alike
        ours.append(_probe(OURS_IMPORT))
        theirs.append(_probe(UPSTREAM_IMPORT))
    o_t, o_m = statistics.median(r[0] for r in ours), statistics.median(r[1] for r in ours)
    u_t, u_m = statistics.median(r[0] for r in theirs), statistics.median(r[1] for r in theirs)
    assert not any(r[2] for r in ours), "orchestrator.client imported tensorflow"
    return {
        "ours_s": o_t,
        "upstream_s": u_t,
        "ours_rss_mb": o_m,
        "upstream_rss_mb": u_m,
        "time_ratio": u_t / o_t,
        "rss_ratio": u_m / o_m,
    }


def best_of(fn: Callable[[], Any], budget_s: float = 1.0, repeats: int = 7) -> float:
    """Best per-call seconds over `repeats` batches sized to ~budget_s/repeats each."""
    fn()
    t = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t, 1e-7)
    n = max(1, int(budget_s / repeats / once))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best


def bench_tensors(budget_s: float) -> list[dict[str, Any]]:
    import numpy as np
    import tensorflow as tf

    from orchestrator.protocol import wire as _wire
    from orchestrator.protocol.tensors import TensorProto, from_tensor_proto, to_tensor_proto

    rows = []
    rng = np.random.default_rng(0)
    for shape in ((1, 10), (1000, 128), (64, 224, 224, 3)):
        a = rng.random(shape, dtype=np.float32)
        floor = best_of(a.tobytes, budget_s)
        tf_proto = tf.make_tensor_proto(a)
        ours_proto = to_tensor_proto(a)
        wire = _wire.encode_tensor(a)
        assert wire == tf_proto.SerializeToString()  # same bytes as TensorFlow writes
        tf_cls = type(tf_proto)
        times = {
            "encode_proto": (
                best_of(lambda a=a: to_tensor_proto(a), budget_s),
                best_of(lambda a=a: tf.make_tensor_proto(a), budget_s),
            ),
            "decode_proto": (
                best_of(lambda p=ours_proto: from_tensor_proto(p), budget_s),
                best_of(lambda p=tf_proto: tf.make_ndarray(p), budget_s),
            ),
            "encode_wire": (
                best_of(lambda a=a: _wire.encode_tensor(a), budget_s),
                best_of(lambda a=a: tf.make_tensor_proto(a).SerializeToString(), budget_s),
            ),
            "decode_wire": (
                best_of(lambda w=wire: _wire.decode_tensor(w), budget_s),
                best_of(lambda w=wire, c=tf_cls: tf.make_ndarray(c.FromString(w)), budget_s),
            ),
        }
        np.testing.assert_array_equal(_wire.decode_tensor(wire), a)
        np.testing.assert_array_equal(from_tensor_proto(TensorProto.FromString(wire)), a)
        for op, (ours, theirs) in times.items():
            rows.append(
                {
                    "shape": "x".join(map(str, shape)),
                    "op": op,
                    "floor_s": floor,
                    "ours_s": ours,
                    "tf_s": theirs,
                    "ours_vs_floor": ours / floor,
                    "tf_vs_ours": theirs / ours,
                }
            )
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _export_model(path: Path) -> None:
    import tensorflow as tf

    class Scale(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * 2.0}

    module = Scale()
    tf.saved_model.save(module, str(path / "1"), signatures={"serving_default": module.serve})


def bench_predict(calls: int, tensor_content: bool = False) -> list[dict[str, Any]]:
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from orchestrator.client import GrpcClient

    tmp = Path(tempfile.mkdtemp(prefix="bench-client-"))
    _export_model(tmp / "scale")
    port, rest = _free_port(), _free_port()
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("tfs-model-server")), f"--port={port}",
         f"--rest_api_port={rest}", "--model_name=scale", f"--model_base_path={tmp / 'scale'}",
         f"--enable_serialization_as_tensor_content={'true' if tensor_content else 'false'}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TFS_BIND_HOST": "127.0.0.1"},
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    rows = []
    try:
        client = GrpcClient(address)
        client.wait_until_available("scale", timeout_s=120)
        options = [
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.max_receive_message_length", 2**31 - 1),
        ]
        channel = grpc.insecure_channel(address, options=options)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for n in (1, 1000, 100_000):
            x = np.random.default_rng(1).random((n, 3), dtype=np.float32)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "scale"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
            np.testing.assert_allclose(client.predict("scale", {"x": x})["y"], 2 * x)
            stub.Predict(request, timeout=30)
            ours, raw = [], []
            inputs = {"x": x}
            for i in range(calls):  # interleaved, order swapped each time (ABBA)
                for which in (0, 1) if i % 2 else (1, 0):
                    t = time.perf_counter()
                    if which:
                        client.predict("scale", inputs)
                    else:
                        stub.Predict(request, timeout=30)
                    (ours if which else raw).append(time.perf_counter() - t)
            o, r = statistics.median(ours), statistics.median(raw)
            # Paired differences: slow drifts of a busy machine cancel out call by call.
            extra = statistics.median(a - b for a, b in zip(ours, raw, strict=True))
            rows.append({"batch": f"{n}x3", "answer": "tensor_content" if tensor_content else "typed",
                         "ours_s": o, "raw_stub_s": r, "overhead": extra / r})
        channel.close()
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    return rows


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:9.2f}us" if seconds < 1e-3 else f"{seconds * 1e3:9.2f}ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    imports = bench_import(3 if args.quick else 7)
    tensors = bench_tensors(0.3 if args.quick else 1.5)
    # The server's two answer forms: typed *_val fields (TF Serving's default) and tensor_content.
    predict = [row for content in (False, True) for row in bench_predict(50 if args.quick else 1000, content)]
    if args.json:
        print(json.dumps({"import": imports, "tensors": tensors, "predict": predict}, indent=2))
        return

    def mark(ok: bool) -> str:
        return "ok " if ok else "MISS"

    i = imports
    print("1. import (fresh process, median)")
    print(f"   time  ours {i['ours_s'] * 1e3:7.1f} ms  upstream {i['upstream_s'] * 1e3:7.1f} ms  "
          f"{i['time_ratio']:5.1f}x faster  [{mark(i['time_ratio'] >= 10)}] target >= 10x")  # fmt: skip
    print(f"   rss   ours {i['ours_rss_mb']:7.1f} MB  upstream {i['upstream_rss_mb']:7.1f} MB  "
          f"{i['rss_ratio']:5.1f}x less    [{mark(i['rss_ratio'] >= 8)}] target >= 8x")  # fmt: skip
    print("2. float32 tensors, best of repeats; floor = ndarray.tobytes (one memcpy)")
    print("   wire:  numpy -> serialised TensorProto -> numpy, the path GrpcClient.predict takes;")
    print("          TF: make_tensor_proto + SerializeToString, FromString + make_ndarray")
    print("   proto: numpy -> TensorProto object -> numpy (to/from_tensor_proto vs")
    print("          make_tensor_proto/make_ndarray); protobuf copies bytes fields on set and get")
    print(
        f"   {'shape':<14}{'op':<14}{'floor':>11}{'ours':>11}{'TF':>11}{'ours/floor':>11}{'TF/ours':>9}"
    )
    for r in tensors:
        big = r["shape"] == "64x224x224x3"
        wire = r["op"].endswith("wire")
        ok = r["tf_vs_ours"] > 1 and (not (big and wire) or r["ours_vs_floor"] <= 1.2)
        print(f"   {r['shape']:<14}{r['op']:<14}{_us(r['floor_s'])}{_us(r['ours_s'])}{_us(r['tf_s'])}"
              f"{r['ours_vs_floor']:10.2f}x{r['tf_vs_ours']:8.1f}x [{mark(ok)}]")  # fmt: skip
    print("3. predict round trip vs raw upstream stub with a prebuilt request (median), for each")
    print("   server answer form (--enable_serialization_as_tensor_content=false|true)")
    for r in predict:
        print(f"   {r['answer']:<15}{r['batch']:<10} ours {r['ours_s'] * 1e3:7.2f} ms  raw {r['raw_stub_s'] * 1e3:7.2f} ms  "
              f"overhead {r['overhead'] * 100:+6.1f}%  [{mark(r['overhead'] <= 0.05)}] target <= +5%")  # fmt: skip


if __name__ == "__main__":
    main()
