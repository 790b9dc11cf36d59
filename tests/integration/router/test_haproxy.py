"""The router with a real HAProxy in front of real HTTP backends on loopback ports."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from orchestrator.router.haproxy import HAProxyRouter, RouterConfig, Upstream, group_weights
from orchestrator.runtime.base import free_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed (scripts/setup_system.sh)")]


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
