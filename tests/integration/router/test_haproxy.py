"""The router with a real HAProxy in front of real HTTP backends on loopback ports."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from orchestrator.errors import RuntimeFailure
from orchestrator.router.haproxy import (
    AVAILABLE_STATE,
    HAProxyRouter,
    RouterConfig,
    Upstream,
    group_weights,
)
from orchestrator.runtime.base import free_port
from tests.helpers.requires import require_haproxy

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, scope="module")
def _needs_haproxy() -> None:
    require_haproxy()  # fails under CI, skips with what to install elsewhere


def backend(tag: str, *, fail: bool = False) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(200, {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                                        "status": {"error_code": "OK", "error_message": ""}}]})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._send(500 if fail else 200, {"backend": tag})

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def router(tmp_path: Path) -> Iterator[tuple[HAProxyRouter, str, dict[str, ThreadingHTTPServer]]]:
    servers = {"stable": backend("stable"), "canary": backend("canary"), "bad": backend("bad", fail=True)}
    rest = free_port()
    config = RouterConfig(name="m", model="m", rest_port=rest, grpc_port=free_port(),
                          stable=(Upstream(grpc_port=free_port(), rest_port=servers["stable"].server_address[1]),))
    router = HAProxyRouter(tmp_path / "router")
    router.start(config)
    try:
        yield router, f"http://127.0.0.1:{rest}", servers
    finally:
        router.stop()
        for s in servers.values():
            s.shutdown()


def wait_for(condition, deadline_s: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def shares(url: str, n: int) -> Counter:
    counts: Counter = Counter()
    with requests.Session() as session:
        for _ in range(n):
            r = session.post(f"{url}/v1/models/m:predict", json={"instances": [1]}, timeout=5)
            counts[(r.status_code, r.json()["backend"])] += 1
    return counts


def test_weights_split_traffic_at_run_time(router) -> None:
    r, url, servers = router
    wait_for(lambda: r.server_states()["rest_pool/stable0"].startswith("UP"), what="stable UP")
    assert shares(url, 50) == Counter({(200, "stable"): 50})

    r.set_canary([Upstream(grpc_port=free_port(), rest_port=servers["canary"].server_address[1])])
    wait_for(lambda: r.server_states()["rest_pool/canary0"].startswith("UP"), what="canary UP")
    for percent in (10, 25, 50, 100):
        r.set_weight(percent)
        counts = shares(url, 400)
        canary_share = 100 * counts[(200, "canary")] / 400
        assert abs(canary_share - percent) <= 5, (percent, counts)
        assert sum(c for (code, _), c in counts.items() if code != 200) == 0

    r.drain_canary()
    assert shares(url, 50) == Counter({(200, "stable"): 50})
    counters = r.counters()
    assert counters["canary"].requests >= 400 * (0.1 + 0.25 + 0.5 + 1.0) * 0.9
    assert counters["stable"].errors == 0 and counters["canary"].errors == 0


def test_counters_see_canary_errors(router) -> None:
    r, url, servers = router
    r.set_canary([Upstream(grpc_port=free_port(), rest_port=servers["bad"].server_address[1])])
    wait_for(lambda: r.server_states()["rest_pool/canary0"].startswith("UP"), what="canary UP")
    r.set_weight(50)
    counts = shares(url, 200)
    assert counts[(500, "bad")] > 50
    counters = r.counters()
    assert counters["canary"].responses_5xx == counts[(500, "bad")]
    assert counters["canary"].errors >= counters["canary"].responses_5xx
    assert counters["stable"].errors == 0


def test_group_weights() -> None:
    assert group_weights(0, 2, 1) == (1, 0)
    assert group_weights(100, 2, 1) == (0, 1)
    s, c = group_weights(25, 3, 1)
    assert c / (c + 3 * s) == pytest.approx(0.25)
    s, c = group_weights(10, 8, 2)
    assert 2 * c / (2 * c + 8 * s) == pytest.approx(0.10, abs=0.01)


# -- the checks against real replicas ------------------------------------------------------------
def _models_config(base: Path, versions: tuple[int, ...]) -> str:
    listed = " ".join(f"versions: {v}" for v in versions)
    return (f'model_config_list {{ config {{ name: "m" base_path: "{base}" model_platform: "tensorflow" '
            f"model_version_policy {{ specific {{ {listed} }} }} }} }}\n")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory):
    """Two real servers for model m: `good` has versions 1 and 2 AVAILABLE; `failed` has 1
    AVAILABLE and 2 failed in TensorFlow's loader (its variables are unreadable)."""
    from orchestrator.runtime.base import reload_config
    from tests.helpers.models import half_plus_two_tf1, half_plus_two_unloadable
    from tests.helpers.server import ServerProcess

    root = tmp_path_factory.mktemp("router-replicas")
    half_plus_two_tf1(root / "good" / "1")
    half_plus_two_tf1(root / "good" / "2", b=3.0)
    half_plus_two_tf1(root / "failed" / "1")
    half_plus_two_unloadable(root / "failed" / "2")
    servers = {}
    try:
        for name in ("good", "failed"):
            config = root / f"{name}.config"
            config.write_text(_models_config(root / name, (1,)))
            servers[name] = ServerProcess([f"--model_config_file={config}"]).__enter__()
            servers[name].wait_until_available("m", [1])
            with contextlib.suppress(RuntimeFailure):  # the load error may come back here or in status
                reload_config(servers[name].grpc_target, _models_config(root / name, (1, 2)))
        servers["good"].wait_until_available("m", [1, 2])
        servers["failed"].wait_until_states("m", {1: "AVAILABLE", 2: "END"})
        yield servers
    finally:
        for srv in servers.values():
            srv.stop()


def test_checks_ask_for_the_wanted_version_of_each_server(tmp_path: Path, replicas) -> None:
    good, failed = replicas["good"], replicas["failed"]
    # What the replica that cannot serve version 2 answers for the whole model: version 1 is
    # AVAILABLE, so a check that looks for "AVAILABLE" anywhere in it would keep it in.
    whole = requests.get(f"{failed.rest_url}/v1/models/m", timeout=5)
    assert '"state": "AVAILABLE"' in whole.text
    # The exact bytes the checks match: TF Serving's JSON printer writes `"state": "AVAILABLE"`.
    assert re.search(AVAILABLE_STATE, requests.get(f"{good.rest_url}/v1/models/m/versions/2", timeout=5).text)
    assert not re.search(AVAILABLE_STATE, requests.get(f"{failed.rest_url}/v1/models/m/versions/2", timeout=5).text)
    assert not re.search(AVAILABLE_STATE, '{"status": {"error_code": "UNAVAILABLE"}}')

    rest = free_port()
    config = RouterConfig(name="m", model="m", rest_port=rest, grpc_port=free_port(), stable_version=2,
                          stable=tuple(Upstream(grpc_port=s.grpc_port, rest_port=s.rest_port)
                                       for s in (good, failed)))
    router = HAProxyRouter(tmp_path / "router")
    router.start(config)
    try:
        def states() -> dict[str, str]:
            return {k: v.split()[0] for k, v in router.server_states().items() if "/stable" in k}

        wait_for(lambda: states() == {"rest_pool/stable0": "UP", "grpc_pool/stable0": "UP",
                                      "rest_pool/stable1": "DOWN", "grpc_pool/stable1": "DOWN"},
                 what="the replica whose version 2 failed DOWN, the other UP")
        url = f"http://127.0.0.1:{rest}"
        with requests.Session() as session:
            answers = {session.post(f"{url}/v1/models/m/versions/2:predict", json={"instances": [1.0]},
                                    timeout=10).status_code for _ in range(20)}
        assert answers == {200}, "no request may reach the replica without version 2"

        # The wanted version changes at run time (a promotion does this): both serve version 1.
        router.set_stable_version(1)
        wait_for(lambda: set(states().values()) == {"UP"}, what="both replicas UP for version 1")
        assert (tmp_path / "router" / "versions.map").read_text().startswith("stable0 1\nstable1 1\n")

        # Canary slots ask for the canary's version.
        router.set_canary([Upstream(grpc_port=failed.grpc_port, rest_port=failed.rest_port)], version=2)
        wait_for(lambda: router.server_states()["rest_pool/canary0"].startswith("DOWN"),
                 what="a canary without its version DOWN")
        router.set_canary([Upstream(grpc_port=good.grpc_port, rest_port=good.rest_port)], version=2)
        wait_for(lambda: router.server_states()["rest_pool/canary0"].startswith("UP"),
                 what="a canary with its version UP")
    finally:
        router.stop()


def test_a_replica_whose_wanted_version_is_loading_is_down_until_available(tmp_path: Path) -> None:
    """Version 2 spends ≥ 12 s LOADING (its warmup replays a calibrated slow request 6 times)
    while version 1 is AVAILABLE: the router keeps the replica out until 2 is AVAILABLE."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    from orchestrator.runtime.base import reload_config
    from tests.helpers.models import half_plus_two_tf1, matmul_iters_for
    from tests.helpers.server import ServerProcess

    base = tmp_path / "m"
    half_plus_two_tf1(base / "1")
    half_plus_two_tf1(base / "2", b=3.0, slow_iters=matmul_iters_for(2.0))
    (base / "2" / "assets.extra").mkdir()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    with tf.io.TFRecordWriter(str(base / "2" / "assets.extra" / "tf_serving_warmup_requests")) as w:
        w.write(log.SerializeToString())
    config = tmp_path / "models.config"
    config.write_text(_models_config(base, (1,)))
    with ServerProcess([f"--model_config_file={config}", "--num_request_iterations_for_warmup=6"]) as srv:
        srv.wait_until_available("m", [1])
        reload = threading.Thread(target=reload_config, args=(srv.grpc_target, _models_config(base, (1, 2))),
                                   kwargs={"timeout_s": 300}, daemon=True)
        reload.start()
        rest = free_port()
        router = HAProxyRouter(tmp_path / "router")
        router.start(RouterConfig(name="m", model="m", rest_port=rest, grpc_port=free_port(), stable_version=2,
                                  stable=(Upstream(grpc_port=srv.grpc_port, rest_port=srv.rest_port),)))
        try:
            def seen(state: str, version_state: str) -> bool:
                stats = {r["svname"]: r for r in router.api.stats() if r["pxname"] == "rest_pool"}
                return (stats["stable0"]["status"].startswith(state)
                        and srv.version_states("m").get(2) == version_state
                        and srv.version_states("m").get(1) == "AVAILABLE")

            wait_for(lambda: seen("DOWN", "LOADING"), deadline_s=60,
                     what="the replica DOWN while its version 2 is LOADING")
            reload.join(timeout=300)
            wait_for(lambda: seen("UP", "AVAILABLE"), deadline_s=60,
                     what="the replica UP once version 2 is AVAILABLE")
        finally:
            router.stop()
