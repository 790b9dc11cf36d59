"""The REST fast path's batched lane (server/rest_lane.py) against real servers with batching on:
byte for byte the answers of aiohttp's path (TFS_REST_FAST=0) for calls it takes and calls it
leaves to the general path, a batch whose calls fail and succeed apart, the same metrics, and a
payload log whose records are the general path's. Requests are written on raw sockets."""

from __future__ import annotations

import json
import re
import socket
import threading
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.server import ServerProcess, export_half_plus_two_tf1
from tests.integration.server.conftest import models_config
from tests.integration.server.test_rest_fast import (
    assert_same_answer,
    call,
    exchange,
    read_answer,
    waiting_batches,
)

pytestmark = pytest.mark.integration
PROM = "/monitoring/prometheus/metrics"
LANE = "tfso_rest_fast_lane_requests_total"


def export_tf1(base: Path, build) -> None:  # type: ignore[no-untyped-def]
    """A TF1 SavedModel (version 1) whose serving_default predict maps `build(tf)`'s
    (inputs, outputs), dicts of alias -> tensor."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        inputs, outputs = build(tf)
        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils.build_signature_def(
            {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()},
            "tensorflow/serving/predict",
        )
        builder = v1.saved_model.Builder(str(base / "1"))
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": sig})
        builder.save()


def two_outputs(tf):  # type: ignore[no-untyped-def]
    """x float [-1, 3] -> total [-1] (row sums) and double [-1, 3] (times [2, 2, 2], so a row of
    another width fails in TensorFlow: the placeholder's shape is not checked on a feed)."""
    x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
    total = tf.reduce_sum(x, axis=1, name="total")
    double = tf.multiply(x, tf.constant([2.0, 2.0, 2.0]), name="double")
    return {"x": x}, {"total": total, "double": double}


def int_input(tf):  # type: ignore[no-untyped-def]
    """n int32 [-1] -> n + 1: not a floating input, so never the lane's."""
    n = tf.compat.v1.placeholder(tf.int32, [None], name="n")
    return {"n": n}, {"out": tf.add(n, 1, name="out")}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lane")
    export_half_plus_two_tf1(root / "half_plus_two", versions=(1,), b=2.0)
    export_half_plus_two_tf1(root / "half_plus_two", versions=(2,), b=3.0)
    export_tf1(root / "two", two_outputs)
    export_tf1(root / "ints", int_input)
    (root / "strings").mkdir()
    (root / "mlp").mkdir()
    config = models_config(root).replace(
        f'config {{ name: "strings" base_path: "{root / "strings"}" model_platform: "tensorflow" }}',
        f'config {{ name: "two" base_path: "{root / "two"}" model_platform: "tensorflow" }}',
    ).replace(
        f'config {{ name: "mlp" base_path: "{root / "mlp"}" model_platform: "tensorflow" }}',
        f'config {{ name: "ints" base_path: "{root / "ints"}" model_platform: "tensorflow" }}',
    )
    (root / "models.config").write_text(config)
    (root / "monitoring.config").write_text(f'prometheus_config {{ enable: true path: "{PROM}" }}\n')
    return root


def flags(root: Path, *extra: str) -> list[str]:
    """Batches wait up to 300 ms for 64 rows, so calls sent together share one."""
    return [f"--model_config_file={root / 'models.config'}",
            f"--monitoring_config_file={root / 'monitoring.config'}",
            *waiting_batches(root, 300_000), *extra]  # fmt: skip


def page(srv: ServerProcess) -> str:
    return urllib.request.urlopen(srv.rest_url + PROM, timeout=10).read().decode()


def counter(srv: ServerProcess, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", page(srv), re.MULTILINE)
    assert m, f"{name} not on the page"
    return float(m.group(1))


@pytest.fixture(scope="module", params=["batching", "direct"])
def servers(root: Path, request: pytest.FixtureRequest):
    """The same models twice, the fast path (and its lane) on and off: with batching, and
    without (where the lane runs a call right away; a loop-run limit no slow machine reaches
    keeps every run after a key's first on the loop, so the lane's counts are exact)."""
    extra = flags(root) if request.param == "batching" else flags(root)[:2]  # models, monitoring
    loop = {"TFS_LOOP_RUN_MAX_US": "10000000"}
    with ServerProcess(extra, env=loop) as lane, ServerProcess(extra, env={**loop, "TFS_REST_FAST": "0"}) as normal:
        for srv in (lane, normal):
            srv.wait_until_available("half_plus_two", versions=(1, 2))
            srv.wait_until_available("two")
            srv.wait_until_available("ints")
        yield lane, normal


# (target, body, taken by the lane)
CASES = [
    ("/v1/models/half_plus_two:predict", b'{"instances": [1.0, 2.0, 5.0]}', True),
    ("/v1/models/half_plus_two:predict", b'{"instances": [[1.0], [2.5]]}', True),
    ("/v1/models/half_plus_two/versions/1:predict", b'{"instances": [1, 2]}', True),
    ("/v1/models/half_plus_two/labels/canary:predict", b'{"instances": [4.0]}', True),
    ("/v1/models/two:predict", b'{"instances": [[1, 2, 3], [4.5, 5, 6e-3]]}', True),
    ("/v1/models/two:predict", b'{"instances": [[1, 2]]}', True),  # wrong width: TF's error
    ("/v1/models/two:predict", b'{"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}', True),
    ("/v1/models/half_plus_two:predict", b'{"instances": [[[1.0]]]}', True),  # rank 3: TF's error
    ("/v1/models/two:predict", b'{"instances": [[1, 2, 3], [4, 5]]}', False),  # ragged
    ("/v1/models/two:predict", b'{"signature_name": "serving_default", "instances": [[1, 2, 3]]}', True),
    ("/v1/models/two:predict", b'{"instances": [[1, 2, 3]], "signature_name": ""}', True),
    ("/v1/models/two:predict", b'{"signature_name": "nope", "instances": [[1, 2, 3]]}', False),
    ("/v1/models/two:predict", b'{"signature_name": 7, "instances": [[1, 2, 3]]}', False),
    ("/v1/models/two:predict", b'{"instances": [[1, 2, 3]], "extra": 1}', False),
    ("/v1/models/two:predict", b'{"inputs": [[1, 2, 3]]}', False),
    ("/v1/models/two:predict", b'{"instances": [{"x": [1, 2, 3]}]}', False),
    ("/v1/models/ints:predict", b'{"instances": [1, 2]}', False),
    ("/v1/models/half_plus_two:predict", b'{"instances": []}', False),
    ("/v1/models/half_plus_two:predict", b'{"instances": [true]}', False),
    ("/v1/models/half_plus_two:predict", b'{"instances": [NaN]}', False),
    ("/v1/models/half_plus_two:predict", b'{"instances": ["a"]}', False),
    ("/v1/models/half_plus_two/versions/9:predict", b'{"instances": [1.0]}', False),
    ("/v1/models/nope:predict", b'{"instances": [1.0]}', False),
    ("/v1/models/half_plus_two:regress", b'{"examples": [{"x": 1.0}]}', False),
]


@pytest.mark.parametrize(("target", "body", "lane"), CASES)
def test_the_same_answer_as_aiohttps_path(servers, target: str, body: bytes, lane: bool) -> None:
    """Each call twice: without batching, a key's first run goes to the thread pool (its cost
    is not known yet), so the lane may take only the second."""
    fast, normal = servers
    before = counter(fast, LANE)
    for _ in range(2):
        assert_same_answer(fast, normal, target, body)
    taken = counter(fast, LANE) - before
    if not lane:
        assert taken == 0
    elif "--enable_batching" in fast.args:
        assert taken == 2
    else:
        assert taken in (1, 2)


@given(
    rows=st.lists(
        st.lists(st.one_of(st.floats(width=32, allow_nan=False, allow_infinity=False),
                           st.integers(-(2**24), 2**24)), min_size=3, max_size=3),
        min_size=1, max_size=4,
    )
)  # fmt: skip
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_rows_get_the_general_paths_answer(servers, rows: list[list[float]]) -> None:
    """Rows of any finite float32 or int values (signs, zeros, extremes, subnormals) on the
    two-output model: the lane's answer is the general path's, byte for byte."""
    fast, normal = servers
    before = counter(fast, LANE)
    assert_same_answer(fast, normal, "/v1/models/two:predict", json.dumps({"instances": rows}).encode())
    if "--enable_batching" in fast.args:  # without, a key's first run is the general path's
        assert counter(fast, LANE) - before == 1


def test_a_batch_answers_each_call_apart(servers) -> None:
    """Calls sent together on their own connections share a batch (it waits 300 ms for them);
    the ones of the wrong width run apart from the others (a batch holds rows of one shape) and
    fail with TF's error, and the rest are answered with their own rows."""
    fast, normal = servers
    [(code, _, wrong)] = exchange(normal.rest_port, call(normal.rest_port, "/v1/models/two:predict",
                                                      b'{"instances": [[1, 2]]}'))  # fmt: skip
    assert code == 400 and b"Incompatible shapes" in wrong, wrong
    before = counter(fast, LANE)
    port = fast.rest_port
    results: dict[int, tuple[int, bytes]] = {}
    go = threading.Barrier(24)

    def client(i: int) -> None:
        body = b'{"instances": [[1, 2]]}' if i % 4 == 3 else b'{"instances": [[%d, 1, 1]]}' % i
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            go.wait(30)
            s.sendall(call(port, "/v1/models/two:predict", body))
            status, _, out = read_answer(s, bytearray())
            results[i] = (status, out)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(24))
    for i, (status, out) in results.items():
        if i % 4 == 3:
            # TF's error names the shape of the batch the bad calls made together
            assert status == 400 and out.startswith(wrong.split(b"vs. [")[0]), out
        else:
            assert status == 200, out
            flat = out.replace(b" ", b"").replace(b"\n", b"")
            assert flat == b'{"predictions":[{"double":[%s,2.0,2.0],"total":%s}]}' % (
                str(2.0 * i).encode(), str(i + 2.0).encode()), out  # fmt: skip
    assert counter(fast, LANE) - before == 24
    # Fewer session calls than calls: they shared batches.
    m = re.search(r'^:tensorflow:serving:batching_session:input_batch_size_count\{.*?\} (\S+)$',
                  page(fast), re.MULTILINE)  # fmt: skip
    assert m is None or float(m.group(1)) < counter(fast, LANE)


METRIC_LINES = re.compile(
    r'^(:tensorflow:serving:request_count|:tensorflow:serving:request_latency_count|'
    r':tensorflow:serving:runtime_latency_count|tfso_requests_total|tfso_request_errors_total|'
    r'tfso_request_duration_seconds_count)\{.*$',
    re.MULTILINE,
)


def test_the_same_metrics_as_aiohttps_path(servers) -> None:
    """The same calls, one by one, on both servers: the same counts in every request metric."""
    fast, normal = servers
    for srv in (fast, normal):
        for target, body, _ in CASES:
            exchange(srv.rest_port, call(srv.rest_port, target, body))
    before = {srv: dict(_counts(srv)) for srv in (fast, normal)}
    for srv in (fast, normal):
        for target, body, _ in CASES:
            exchange(srv.rest_port, call(srv.rest_port, target, body))
    after = {srv: dict(_counts(srv)) for srv in (fast, normal)}
    grown = {srv: {k: v - before[srv].get(k, 0) for k, v in after[srv].items()} for srv in after}
    assert grown[fast] == grown[normal]
    assert any(k.startswith("tfso_requests_total") and 'model="two"' in k for k in grown[fast])


def _counts(srv: ServerProcess) -> list[tuple[str, float]]:
    out = []
    for m in METRIC_LINES.finditer(page(srv)):
        line = m.group(0)
        name, _, value = line.rpartition(" ")
        if 'entrypoint="REST"' in name or "tfso_" in name or "runtime" in name:
            out.append((name, float(value)))
    return out


def test_a_payload_log_gets_the_general_paths_records_from_the_lane(root: Path, tmp_path: Path) -> None:
    """A model with a payload log keeps the lane (a 1 % sample must not cost every call the
    general path), and the records it writes hold what the general path's do: request,
    response, model spec and request id, for the calls of one batch too."""
    from orchestrator.plan import model_config, models_config_text
    from orchestrator.spec import Spec
    from tests.helpers.server import wait_until
    from tests.integration.server.test_payload_logging import _records

    bodies = [b'{"instances": [[1, 2, 3]]}', b'{"instances": [[4.5, 5, 6], [7, 8, 9]]}',
              b'{"signature_name": "serving_default", "instances": [[0.25, 0, -1]]}']  # fmt: skip
    records = {}
    for way, env in (("lane", {}), ("general", {"TFS_REST_FAST": "0"})):
        logs = tmp_path / way
        spec = Spec.model_validate({"name": "two", "base_path": str(root / "two"),
                                    "logging": {"sample": 1.0, "path": str(logs), "max_mb": 8}})  # fmt: skip
        (tmp_path / f"{way}.config").write_text(models_config_text([model_config(spec)]))
        args = [f"--model_config_file={tmp_path / f'{way}.config'}", *flags(root)[1:]]
        with ServerProcess(args, env=env) as srv:
            srv.wait_until_available("two")
            port = srv.rest_port
            socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in bodies]
            try:  # sent together on their own connections: the calls share one batch
                for i, (sock, body) in enumerate(zip(socks, bodies, strict=True)):
                    sock.sendall(call(port, "/v1/models/two:predict", body,
                                      f"X-Request-Id: r{i}\r\n"))  # fmt: skip
                statuses = [read_answer(sock, bytearray())[0] for sock in socks]
            finally:
                for sock in socks:
                    sock.close()
            assert statuses == [200] * len(bodies)
            assert counter(srv, LANE) == (len(bodies) if way == "lane" else 0)
            line = f'tfso_prediction_log_records_total{{model="two"}} {len(bodies)}'
            wait_until(lambda s=srv, line=line: line in page(s), timeout_s=30,
                       what="every call's record written")  # fmt: skip
        rows = _records(logs / "two")
        for r in rows:
            r.log_metadata.ClearField("timestamp_secs")  # when it was logged: differs
        records[way] = sorted((r.log_metadata.request_origin, r.SerializeToString()) for r in rows)
    assert [rid for rid, _ in records["lane"]] == ["r0", "r1", "r2"]
    assert records["lane"] == records["general"]
