"""Per-version `tfso_*` metrics on a real server, read back with prometheus-client's parser.

Counts are compared with what the test sent, as differences of two scrapes of the same server,
so other requests (health checks, warmup) cannot make them pass by accident.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.helpers.server import ServerProcess, export_half_plus_two_tf1

pytestmark = pytest.mark.integration
PATH = "/monitoring/prometheus/metrics"
Key = tuple[str, tuple[tuple[str, str], ...]]


def _server(root: Path, env: dict[str, str] | None = None, batching: bool = False) -> ServerProcess:
    base = root / "hpt"
    if not base.exists():
        export_half_plus_two_tf1(base, versions=(1,), b=2.0)
        export_half_plus_two_tf1(base, versions=(2,), b=3.0)
    (root / "models.config").write_text(
        f'model_config_list {{ config {{ name: "hpt" base_path: "{base}" '
        'model_platform: "tensorflow" model_version_policy { all {} } '
        'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } } }\n'
    )
    (root / "monitoring.config").write_text(f'prometheus_config {{ enable: true path: "{PATH}" }}\n')
    args = [
        f"--model_config_file={root / 'models.config'}",
        f"--monitoring_config_file={root / 'monitoring.config'}",
    ]
    if batching:
        (root / "batching.config").write_text(
            "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\n"
            "max_enqueued_batches { value: 7 }\nnum_batch_threads { value: 1 }\n"
        )
        args += ["--enable_batching", f"--batching_parameters_file={root / 'batching.config'}"]
    return ServerProcess(args, env=env)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with _server(tmp_path_factory.mktemp("vm"), batching=True) as srv:
        srv.wait_until_available("hpt", versions=(1, 2))
        yield srv


def scrape(srv: ServerProcess) -> dict[Key, float]:
    text = requests.get(srv.rest_url + PATH, timeout=10).text
    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[Key, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def rest_predict(srv: ServerProcess, suffix: str, body: object) -> requests.Response:
    return requests.post(f"{srv.rest_url}/v1/models/hpt{suffix}:predict", json=body, timeout=30)


def grpc_predict(srv: ServerProcess, version: int | None = None, x: object = ((1.0,),)) -> None:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "hpt"
    if version is not None:
        req.model_spec.version.value = version
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(x, dtype=np.float32)))
    with grpc.insecure_channel(srv.grpc_target) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        stub.Predict(req, timeout=30)


def test_counts_per_version_protocol_and_errors(server: ServerProcess) -> None:
    before = scrape(server)
    for _ in range(3):
        assert rest_predict(server, "/versions/1", {"instances": [[1.0]]}).status_code == 200
    for _ in range(2):
        assert rest_predict(server, "/labels/canary", {"instances": [[1.0]]}).status_code == 200
    assert rest_predict(server, "/versions/2", {"instances": [["x"]]}).status_code == 400
    assert rest_predict(server, "/versions/9", {"instances": [[1.0]]}).status_code == 404
    for _ in range(4):
        grpc_predict(server, version=2)
    with pytest.raises(grpc.RpcError):
        grpc_predict(server, version=1, x=((1.0, 2.0, 3.0),) * 9)  # > max_batch_size rows
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    base = {"model": "hpt", "signature": "serving_default", "method": "predict"}
    v1r = {**base, "version": "1", "protocol": "rest"}
    v2r = {**base, "version": "2", "protocol": "rest"}
    v2g = {**base, "version": "2", "protocol": "grpc"}
    v1g = {**base, "version": "1", "protocol": "grpc"}
    assert delta("tfso_requests_total", **v1r) == 3
    assert delta("tfso_requests_total", **v2r) == 3  # 2 by label + 1 bad input
    assert delta("tfso_requests_total", **v2g) == 4
    assert delta("tfso_requests_total", **v1g) == 1
    assert delta("tfso_request_errors_total", **v2r, code="INVALID_ARGUMENT") == 1
    assert delta("tfso_request_errors_total", **v1g, code="INVALID_ARGUMENT") == 1
    unknown = {"model": "hpt", "version": "", "signature": "", "method": "predict",
               "protocol": "rest", "code": "NOT_FOUND"}
    assert delta("tfso_request_errors_total", **unknown) == 1
    # Latency: successful calls only, so its count is requests minus errors.
    assert delta("tfso_request_duration_seconds_count", **v1r) == 3
    assert delta("tfso_request_duration_seconds_count", **v2r) == 2
    assert delta("tfso_request_duration_seconds_count", **v2g) == 4
    assert delta("tfso_request_duration_seconds_bucket", **v2g, le="+Inf") == 4
    assert delta("tfso_request_duration_seconds_sum", **v2g) > 0
    # TF Serving's own names are still there (the parser reads counters as NAME_total).
    assert value(after, ":tensorflow:serving:request_count_total", model_name="hpt", status="OK") > 0


def test_batching_load_and_process_gauges(server: ServerProcess) -> None:
    before = scrape(server)
    assert rest_predict(server, "/versions/2", {"instances": [[1.0], [2.0], [3.0]]}).ok
    after = scrape(server)
    # One batch of 3 rows for version 2 (nothing else queues on this idle server).
    assert value(after, "tfso_batch_size_count", model="hpt", version="2") - value(
        before, "tfso_batch_size_count", model="hpt", version="2"
    ) == 1
    assert value(after, "tfso_batch_size_bucket", model="hpt", version="2", le="4") - value(
        before, "tfso_batch_size_bucket", model="hpt", version="2", le="4"
    ) == 1
    assert value(after, "tfso_batch_queue_capacity_batches") == 7
    assert ("tfso_batch_queue_depth_batches", (("model", "hpt"), ("version", "1"))) in after
    for v in ("1", "2"):
        assert value(after, "tfso_model_version_available", model="hpt", version=v) == 1
        assert value(after, "tfso_model_load_duration_seconds", model="hpt", version=v) > 0
    assert value(after, "tfso_process_resident_memory_bytes") > 10_000_000
    assert value(after, "tfso_process_cpu_seconds_total") > 0
    assert value(after, "tfso_process_start_time_seconds") > 1e9


def test_switched_off(tmp_path: Path) -> None:
    with _server(tmp_path, env={"TFS_VERSION_METRICS": "0"}) as srv:
        srv.wait_until_available("hpt", versions=(1, 2))
        assert rest_predict(srv, "/versions/1", {"instances": [[1.0]]}).ok
        samples = scrape(srv)
    assert not [k for k in samples if k[0].startswith("tfso_")]
    assert value(samples, ":tensorflow:serving:request_count_total", model_name="hpt", status="OK") >= 1
