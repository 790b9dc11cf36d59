"""Prometheus text with TF Serving's metric names, labels and buckets."""

from __future__ import annotations

import pytest

from orchestrator.server.metrics import Metrics, exponential


def test_exponential_buckets_like_tensorflow():
    assert exponential(10, 1.8, 3) == pytest.approx([10, 18, 32.4])


def test_render():
    m = Metrics()
    m.record_request("hpt", "predict", "REST", "OK", 15.0)
    m.record_request("hpt", "predict", "REST", "NOT_FOUND", 0)
    text = m.render()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="hpt",status="OK"} 1' in text
    assert ':tensorflow:serving:request_count{model_name="hpt",status="NOT_FOUND"} 1' in text
    assert (
        ':tensorflow:serving:request_latency_bucket{model_name="hpt",API="predict",entrypoint="REST",le="10"} 0'
        in text
    )
    assert (
        ':tensorflow:serving:request_latency_bucket{model_name="hpt",API="predict",entrypoint="REST",le="18"} 1'
        in text
    )
    assert (
        ':tensorflow:serving:request_latency_bucket{model_name="hpt",API="predict",entrypoint="REST",le="+Inf"} 1'
        in text
    )
    assert (
        ':tensorflow:serving:request_latency_sum{model_name="hpt",API="predict",entrypoint="REST"} 15'
        in text
    )
    assert (
        ':tensorflow:serving:request_latency_count{model_name="hpt",API="predict",entrypoint="REST"} 1'
        in text
    )


def test_version_metrics_read_back_by_prometheus_client():
    import time

    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics(version_metrics=True)
    call = m.begin("hpt", "predict", "grpc")
    assert call is not None
    call.version, call.signature = "2", "serving_default"
    m.end(call, "OK", time.perf_counter() - 0.003)  # 3 ms: in the (0.0025, 0.005] bucket
    m.end(m.begin("hpt", "predict", "rest"), "NOT_FOUND", time.perf_counter())
    families = {f.name: f for f in text_string_to_metric_families(m.render())}
    labels = {"model": "hpt", "version": "2", "signature": "serving_default",
              "method": "predict", "protocol": "grpc"}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}

    def get(name, **extra):
        return samples[(name, tuple(sorted({**labels, **extra}.items())))]

    assert families["tfso_requests"].type == "counter"
    assert families["tfso_request_duration_seconds"].type == "histogram"
    assert get("tfso_requests_total") == 1
    assert get("tfso_request_duration_seconds_bucket", le="0.0025") == 0
    assert get("tfso_request_duration_seconds_bucket", le="0.005") == 1
    assert get("tfso_request_duration_seconds_count") == 1
    unknown = {"model": "hpt", "version": "", "signature": "", "method": "predict",
               "protocol": "rest"}
    assert samples[("tfso_request_errors_total",
                    tuple(sorted({**unknown, "code": "NOT_FOUND"}.items())))] == 1


def test_version_metrics_off():
    m = Metrics(version_metrics=False)
    m.end(m.begin("hpt", "predict", "rest"), "OK", 0.0)
    assert "tfso_" not in m.render()
