"""--rest_api_num_threads=2: two worker processes share the ports under a supervisor.

Each worker's own Prometheus page is read through its control socket (server.workers.Link), so
the tests can see which worker answered, that a reload reached each one, and that the merged page
is the exact sum (once the other worker's snapshot is written, SNAPSHOT_S).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import pytest
import requests

from orchestrator.client import GrpcClient
from orchestrator.server.workers import Link
from tests.helpers.server import (
    ServerProcess,
    export_half_plus_two_tf1,
    run_server_expect_exit,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two workers need two CPUs"),
]

SERVING = re.compile(r"Serving with 2 worker processes \(pids (\d+), (\d+); control sockets in (\S+)\)")
COUNT = re.compile(r'^tfso_requests_total\{model="(\w+)",[^}]*protocol="rest"\} (\d+)$', re.M)


def _config(base_a: str, base_b: str | None = None) -> str:
    text = f'model_config_list {{ config {{ name: "a" base_path: "{base_a}" model_platform: "tensorflow" }}'
    if base_b:
        text += f' config {{ name: "b" base_path: "{base_b}" model_platform: "tensorflow" }}'
    return text + " }\n"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    a = export_half_plus_two_tf1(root / "a", versions=(1,))
    b = export_half_plus_two_tf1(root / "b", versions=(1,))
    (root / "monitoring.config").write_text("prometheus_config { enable: true }\n")
    return root, str(a), str(b)


@pytest.fixture
def server(models):
    root, a, _ = models
    (root / "models.config").write_text(_config(a))
    args = [
        f"--model_config_file={root / 'models.config'}",
        "--model_config_file_poll_wait_seconds=1",
        f"--monitoring_config_file={root / 'monitoring.config'}",
        "--rest_api_num_threads=2",
    ]
    with ServerProcess(args) as srv:
        wait_until(lambda: SERVING.search(srv.logs()), timeout_s=120, what="2 workers", logs=srv.logs)
        yield srv


def _sockets(srv: ServerProcess) -> tuple[list[int], str]:
    m = SERVING.search(srv.logs())
    assert m, srv.logs()
    return [int(m.group(1)), int(m.group(2))], m.group(3)


def _own_pages(directory: str) -> list[str]:
    """Each worker's own page, straight from its control socket."""

    async def ask() -> list[str]:
        pages = []
        for i in (0, 1):
            answer = await Link(directory, -1).ask(i, "metrics")
            assert answer[0] == "ok", answer
            pages.append(answer[1])
        return pages

    return asyncio.run(ask())


def _counts(page: str) -> dict[str, int]:
    return {model: int(n) for model, n in COUNT.findall(page)}


def _predict(srv: ServerProcess, model: str, n: int) -> None:
    for i in range(n):  # no session: a new connection each time, spread over the workers
        r = requests.post(
            f"{srv.rest_url}/v1/models/{model}:predict", json={"instances": [float(i)]}, timeout=30
        )
        assert r.json() == {"predictions": [0.5 * i + 2.0]}, r.text


def test_both_workers_answer_and_metrics_are_exact_sums(server):
    _, directory = _sockets(server)
    _predict(server, "a", 60)
    own = [_counts(p) for p in _own_pages(directory)]
    assert all(c.get("a", 0) > 0 for c in own), own  # both workers served some
    def merged_page() -> str | None:
        page = requests.get(server.rest_url + "/monitoring/prometheus/metrics", timeout=10).text
        return page if _counts(page) == {"a": 60} else None

    # the other worker's counts come from its latest snapshot, at most SNAPSHOT_S old
    merged = wait_until(merged_page, timeout_s=10, what="the merged page to count all 60 requests")
    assert sum(c["a"] for c in own) == 60
    tf_count = re.search(
        r':tensorflow:serving:request_count\{model_name="a",status="OK"\} (\d+)', merged
    )
    assert tf_count and int(tf_count.group(1)) == 60, merged
    assert 'tfso_model_version_available{model="a",version="1"} 1\n' in merged


def test_reload_and_config_poll_reach_every_worker(server, models):
    root, a, b = models
    _, directory = _sockets(server)
    with GrpcClient(server.grpc_target) as client:
        client.reload_config(_config(a, b))  # answers after every worker applied it
    for page in _own_pages(directory):
        assert 'tfso_model_version_available{model="b",version="1"} 1' in page
    _predict(server, "b", 10)
    # The config file (polled every second by each worker; a changed text) takes "b" away again.
    (root / "models.config").write_text(_config(a) + "# b removed\n")

    def gone_everywhere() -> bool:
        return all(
            'tfso_model_version_available{model="b",version="1"} 1' not in p
            for p in _own_pages(directory)
        )

    wait_until(gone_everywhere, timeout_s=60, what="model b unloaded in both workers")
    for _ in range(10):
        r = requests.get(server.rest_url + "/v1/models/b", timeout=10)
        assert r.json()["model_version_status"][0]["state"] == "END", r.text


def test_a_killed_worker_is_replaced_and_sigterm_stops_all(server):
    pids, directory = _sockets(server)
    os.kill(pids[0], signal.SIGKILL)
    restarted = re.compile(r"worker 0 restarted \(pid (\d+)\)")
    m = wait_until(lambda: restarted.search(server.logs()), timeout_s=120, what="worker 0 restarted")
    new_pid = int(m.group(1))
    assert new_pid not in pids
    _predict(server, "a", 30)
    own = [_counts(p) for p in _own_pages(directory)]
    assert all(c.get("a", 0) > 0 for c in own), own  # the new worker serves too
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0
    for pid in (pids[1], new_pid):
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived its supervisor"


def test_a_worker_that_cannot_start_stops_the_server(tmp_path):
    result = run_server_expect_exit(
        ["--model_name=m", f"--model_base_path={tmp_path}/nothing", "--rest_api_num_threads=2",
         "--port=0", "--grpc_socket_path=" + str(tmp_path / "s")]
    )
    assert result.returncode == 255
    assert "--grpc_socket_path: a UNIX socket cannot be shared" in result.stdout
    bad = tmp_path / "models.config"
    bad.write_text("model_config_list { no_such_field: 1 }\n")  # every worker fails to parse it
    from tests.helpers.server import free_port

    result = run_server_expect_exit(
        [f"--model_config_file={bad}", "--rest_api_num_threads=2", f"--port={free_port()}"]
    )
    assert result.returncode == 255, result.stdout + result.stderr
    assert result.stdout.count("Failed to start server.") == 1, result.stdout
