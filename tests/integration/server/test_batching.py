"""--enable_batching: concurrent requests are merged into one model run, answers stay per request."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers.server import ServerProcess, export_half_plus_two_tf1

pytestmark = pytest.mark.integration
N = 16


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    base = export_half_plus_two_tf1(root / "hpt", versions=(1,))
    (root / "batching.config").write_text(
        "max_batch_size { value: 8 }\n"
        "batch_timeout_micros { value: 200000 }\n"
        "max_enqueued_batches { value: 100 }\n"
        "num_batch_threads { value: 1 }\n"
        "allowed_batch_sizes: 4\nallowed_batch_sizes: 8\n"
    )
    (root / "monitoring.config").write_text("prometheus_config { enable: true }\n")
    args = [
        "--model_name=hpt",
        f"--model_base_path={base}",
        "--enable_batching",
        f"--batching_parameters_file={root / 'batching.config'}",
        f"--monitoring_config_file={root / 'monitoring.config'}",
    ]
    with ServerProcess(args) as srv:
        srv.wait_until_available("hpt", [1])
        yield srv


def test_concurrent_requests_are_batched_and_answered_each(batching_server):
    url = batching_server.rest_url + "/v1/models/hpt:predict"
    barrier = threading.Barrier(N)

    def one(i: int):
        barrier.wait(timeout=30)
        return requests.post(url, json={"instances": [[float(i)]]}, timeout=60)

    with ThreadPoolExecutor(N) as pool:
        responses = list(pool.map(one, range(N)))
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [[0.5 * i + 2.0]]}
    metrics = requests.get(
        batching_server.rest_url + "/monitoring/prometheus/metrics", timeout=10
    ).text
    m = re.search(
        r':tensorflow:serving:batching_session:input_batch_size_count\{model_name="hpt"\} (\d+)',
        metrics,
    )
    assert m, metrics
    assert int(m.group(1)) < N  # fewer model runs than requests


def test_multi_row_and_unbatchable_requests(batching_server):
    url = batching_server.rest_url + "/v1/models/hpt:predict"
    r = requests.post(url, json={"instances": [1.0, 2.0, 5.0]}, timeout=60)
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}
    r = requests.post(url, json={"instances": [[1.0]] * 9}, timeout=60)  # over max_batch_size
    assert r.status_code == 400
    assert "larger than maximum input batch size 8" in r.json()["error"]
    r = requests.post(
        batching_server.rest_url + "/v1/models/hpt:regress",
        json={"signature_name": "regress_x_to_y", "examples": [{"x": 4.0}]},
        timeout=60,
    )
    assert r.json() == {"results": [4.0]}


def test_a_full_queue_is_429_over_rest_and_resource_exhausted_over_grpc(tmp_path):
    """One batch thread, one waiting batch, one row per batch and a version that computes for
    ~3 s (calibrated on this machine): of 12 requests sent at once, one runs, one waits, and
    the queue refuses the rest, as TF Serving's batch scheduler does."""
    from orchestrator.client import GrpcClient
    from orchestrator.client.errors import ClientServingError
    from tests.helpers.models import half_plus_two_tf1, matmul_iters_for

    half_plus_two_tf1(tmp_path / "slow" / "1", slow_iters=matmul_iters_for(3.0))
    (tmp_path / "batching.config").write_text(
        "max_batch_size { value: 1 }\nbatch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n")
    args = ["--model_name=slow", f"--model_base_path={tmp_path / 'slow'}", "--enable_batching",
            f"--batching_parameters_file={tmp_path / 'batching.config'}"]
    with ServerProcess(args) as srv:
        srv.wait_until_available("slow", [1])
        barrier = threading.Barrier(12)

        def rest(_: int) -> tuple[int, str]:
            barrier.wait(timeout=60)
            r = requests.post(srv.rest_url + "/v1/models/slow:predict", json={"instances": [[1.0]]},
                              timeout=120)
            return r.status_code, r.text

        def grpc(_: int) -> tuple[int, str]:
            with GrpcClient(srv.grpc_target, timeout_s=120) as client:
                client.status("slow")  # connected before the race starts
                barrier.wait(timeout=60)
                try:
                    client.predict("slow", {"x": [[1.0]]})
                    return 200, ""
                except ClientServingError as e:
                    return -1, f"{e.code}: {e}"

        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(rest, i) for i in range(6)] + [pool.submit(grpc, i) for i in range(6)]
            answers = [f.result() for f in futures]
    ok = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] != 200]
    assert 1 <= len(ok) <= 2 and len(refused) >= 10, answers
    for code, text in refused:
        if code == -1:
            assert text.startswith("RESOURCE_EXHAUSTED") and "queue" in text, text
        else:
            assert code == 429 and "batch scheduling queue" in text and "is full" in text, text
    assert any(c == 429 for c, _ in refused) and any(c == -1 for c, _ in refused), answers
