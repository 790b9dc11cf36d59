"""Worker count from --rest_api_num_threads, and the merge of the workers' Prometheus pages."""

from __future__ import annotations

import pytest

from orchestrator.server import flags
from orchestrator.server.metrics import Metrics
from orchestrator.server.workers import merge_pages, worker_count


def test_worker_count_maps_rest_api_num_threads():
    assert worker_count(0, 8) == 1  # not set: one process
    assert worker_count(3, 8) == 3
    assert worker_count(64, 8) == 8  # capped at the CPU count
    for nonsense in (-1, 1025):
        with pytest.raises(ValueError, match="--rest_api_num_threads"):
            worker_count(nonsense, 8)


def test_nonsense_worker_count_is_refused_by_validate():
    opts = flags.parse(["--model_base_path=/m", "--rest_api_num_threads=-4"])
    with pytest.raises(flags.FlagError, match="expected 1 to 1024"):
        flags.validate(opts)


def _page(ok: int, errors: int, latency_us: float, available: float, rss: int) -> str:
    m = Metrics(version_metrics=False)
    for _ in range(ok):
        m.record_request("m", "predict", "REST", "OK", latency_us)
    for _ in range(errors):
        m.record_request("m", "predict", "REST", "NOT_FOUND", 0)
    return m.render() + (
        "# TYPE tfso_model_version_available gauge\n"
        f'tfso_model_version_available{{model="m",version="1"}} {available:g}\n'
        "# TYPE tfso_process_resident_memory_bytes gauge\n"
        f"tfso_process_resident_memory_bytes {rss}\n"
    )


def test_merge_sums_counters_and_histograms_exactly():
    merged = merge_pages([_page(3, 1, 15.0, 1, 100), _page(4, 0, 20.0, 0, 50)])
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 7\n' in merged
    # a series only one worker has is kept as is
    assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"} 1\n' in merged
    prefix = ':tensorflow:serving:request_latency'
    labels = '{model_name="m",API="predict",entrypoint="REST"'
    assert f'{prefix}_bucket{labels},le="18"}} 3\n' in merged
    assert f'{prefix}_bucket{labels},le="32.4"}} 7\n' in merged
    assert f"{prefix}_count{labels}}} 7\n" in merged
    assert f"{prefix}_sum{labels}}} 125\n" in merged
    # availability is the minimum (available everywhere), memory the total
    assert 'tfso_model_version_available{model="m",version="1"} 0\n' in merged
    assert "tfso_process_resident_memory_bytes 150\n" in merged
    assert merged.count("# TYPE :tensorflow:serving:request_count counter") == 1
