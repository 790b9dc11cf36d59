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
