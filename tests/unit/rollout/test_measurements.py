"""Rollout measurements that must be true: one source per rate, clamped, and reports that show
the thresholds and say when there is no latency to show."""

from __future__ import annotations

import json

from orchestrator.rollout import machine
from orchestrator.rollout.analysis import Verdict, Window, analyse
from orchestrator.rollout.manager import new_status
from orchestrator.rollout.metrics import TF_SERVING_SOURCE, Snapshot, snapshot_from_text
from orchestrator.rollout.report import draw, report_rows, write_report
from orchestrator.rollout.target import ROUTER_SOURCE, pick_counters, window

# A canary whose every request fails (5 features expected, 4 sent): no latency observed at all.
ALL_FAILING = """
:tensorflow:serving:request_count{model_name="m",status="OK"} 12
:tensorflow:serving:request_count{model_name="m",status="INVALID_ARGUMENT"} 4421
:tensorflow:serving:request_latency_count{model_name="m",API="",entrypoint="REST"} 12
"""
BEFORE = """
:tensorflow:serving:request_count{model_name="m",status="OK"} 2
:tensorflow:serving:request_latency_count{model_name="m",API="",entrypoint="REST"} 2
"""


def test_every_request_failing_is_a_rate_of_one():
    w = window(snapshot_from_text(ALL_FAILING, "m"), snapshot_from_text(BEFORE, "m"))
    # status calls (API "") are not inference; the 4421 failures are both errors and requests
    assert (w.requests, w.errors, w.error_rate, w.p99_ms) == (4421, 4421, 1.0, None)
    assert w.source == TF_SERVING_SOURCE


def test_rate_is_clamped_whatever_the_counts():
    assert Window(10, 25).error_rate == 1.0
    assert Window(10, -3).error_rate == 0.0
    assert Window(0, 5).error_rate is None


def test_one_source_per_group():
    router = Snapshot(1000, 10)
    prom = Snapshot(400, 400, {float("inf"): 0.0}, TF_SERVING_SOURCE)
    both = pick_counters([prom, prom], router)
    assert (both.requests, both.errors, both.source) == (800, 800, TF_SERVING_SOURCE)
    # one replica did not answer its scrape: the router's pair, never a mix of the two
    mixed = pick_counters([prom, None], router)
    assert (mixed.requests, mixed.errors, mixed.source) == (1000, 10, ROUTER_SOURCE)


def test_analysis_says_which_counters_it_used():
    limits = dict(max_error_rate=0.01, max_latency_p99_ms=None, min_requests=20)
    result = analyse(Window(4421, 4421, None, TF_SERVING_SOURCE), None, **limits)
    assert result.verdict is Verdict.FAIL
    assert result.reason == f"error rate 100.00% > 1.00% [counters: {TF_SERVING_SOURCE}]"
    assert (result.error_rate, result.source) == (1.0, TF_SERVING_SOURCE)


def failed_rollout(p99_limit: float | None = 250.0) -> machine.Status:
    thresholds = machine.Thresholds(max_error_rate=0.01, max_latency_p99_ms=p99_limit, min_requests=20)
    status = new_status("demo", "demo", 1, 2, steps=(10, 50), interval_s=5.0, thresholds=thresholds, now=0.0)
    status, _ = machine.start(status, 1.0)
    limits = dict(max_error_rate=0.01, max_latency_p99_ms=p99_limit, min_requests=20)
    result = analyse(Window(4421, 4421, None, TF_SERVING_SOURCE), None, **limits)
    status, _ = machine.advance(status, result, 6.0)
    status, _ = machine.advance(status, result, 11.0)
    return status


def test_report_rows_carry_the_source_and_a_true_rate():
    rows = report_rows(failed_rollout())
    measured = [r for r in rows if r["requests"]]
    assert measured and all(r["error_rate"] == 1.0 for r in measured)
    assert all(r["source"] == TF_SERVING_SOURCE for r in measured)


def test_every_judged_panel_draws_its_threshold_and_p99_says_why_it_is_empty():
    status = failed_rollout()
    fig = draw(status, report_rows(status))
    _weight, rate, errors, p99 = fig.axes
    labels = {ax: [line.get_label() for line in ax.get_lines()] for ax in fig.axes}
    assert "min 20 requests per 5 s check" in labels[rate]
    assert "max error rate 1.00%" in labels[errors]
    assert "max p99 250 ms" in labels[p99]
    assert [t.get_text() for t in p99.texts] == ["no successful requests: no latency to show"]
    errors_line = next(ln for ln in errors.get_lines() if ln.get_label() == "max error rate 1.00%")
    assert list(errors_line.get_ydata()) == [0.01, 0.01]


def test_write_report_writes_png_and_json(tmp_path):
    status = failed_rollout(p99_limit=None)
    json_path = write_report(status, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0
    rows = json.loads(json_path.read_text())["rows"]
    assert max(r["error_rate"] or 0 for r in rows) == 1.0
