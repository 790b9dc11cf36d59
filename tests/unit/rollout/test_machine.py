"""The rollout state machine: every path through the transition table, driven step by step."""

from __future__ import annotations

import json

import pytest

from orchestrator.errors import RolloutError
from orchestrator.rollout.analysis import Analysis, Verdict, Window, analyse
from orchestrator.rollout.machine import (
    TERMINAL,
    TRANSITIONS,
    Phase,
    Promote,
    RemoveCanary,
    SetWeight,
    Status,
    Thresholds,
    advance,
    finish_promotion,
    finish_rollback,
    pause,
    resume,
    start,
    transition,
    validate_steps,
)

PASS = Analysis(Verdict.PASS, "ok", 100, 0, 0.0, 5.0)
FAIL = Analysis(Verdict.FAIL, "error rate 50.00% > 1.00%", 100, 50, 0.5, 5.0)
NO_DATA = Analysis(Verdict.NO_DATA, "3 canary requests (< 20)", 3, 0, 0.0, None)
CRASH = Analysis(Verdict.CRASHED, "canary replica is not running")


def new_status(**kw) -> Status:
    base = dict(name="m", model="m", from_version=1, to_version=2, steps=(10, 25, 50, 100),
                interval_s=5.0, thresholds=Thresholds(threshold=2))
    base.update(kw)
    return Status(**base)


def test_good_canary_ramps_then_promotes() -> None:
    s, actions = start(new_status(), now=0)
    assert (s.phase, s.weight, actions) == (Phase.PROGRESSING, 10, [SetWeight(10)])
    weights = []
    for t in range(1, 4):
        s, actions = advance(s, PASS, now=t)
        weights.append(actions[0].weight)
    assert weights == [25, 50, 100]
    s, actions = advance(s, PASS, now=5)
    assert s.phase is Phase.PROMOTING and actions == [Promote()]
    s, actions = finish_promotion(s, now=6)
    assert s.phase is Phase.SUCCEEDED and s.terminal
    assert actions == [SetWeight(0), RemoveCanary()]
    assert [r.decision for r in s.history][:2] == ["weight 10%", "weight 25%"]


def test_failures_reach_threshold_then_roll_back() -> None:
    s, _ = start(new_status(), now=0)
    s, actions = advance(s, FAIL, now=1)
    assert s.phase is Phase.PROGRESSING and s.failed_checks == 1 and actions == [] and s.weight == 10
    s, actions = advance(s, FAIL, now=2)
    assert s.phase is Phase.ROLLING_BACK and actions == [SetWeight(0), RemoveCanary()]
    assert "2 failed checks" in s.message and s.weight == 0
    s = finish_rollback(s, now=3)
    assert s.phase is Phase.FAILED


def test_a_pass_resets_the_failure_count() -> None:
    s, _ = start(new_status(), now=0)
    s, _ = advance(s, FAIL, now=1)
    s, _ = advance(s, PASS, now=2)
    assert s.failed_checks == 0 and s.weight == 25
    s, _ = advance(s, FAIL, now=3)
    assert s.phase is Phase.PROGRESSING


def test_no_data_halts_without_failing() -> None:
    s, _ = start(new_status(), now=0)
    for t in range(1, 10):
        s, actions = advance(s, NO_DATA, now=t)
        assert actions == [] and s.weight == 10 and s.failed_checks == 0
    assert s.history[-1].decision == "halt: no data"


def test_crash_rolls_back_at_once() -> None:
    s, _ = start(new_status(), now=0)
    s, actions = advance(s, CRASH, now=1)
    assert s.phase is Phase.ROLLING_BACK and RemoveCanary() in actions


def test_pause_resume_abort() -> None:
    s, _ = start(new_status(), now=0)
    s = pause(s, now=1)
    assert s.phase is Phase.PAUSED
    assert advance(s, PASS, now=2)[0] == s, "a paused rollout does not advance"
    s = resume(s, now=3)
    assert s.phase is Phase.PROGRESSING
    s = transition(s, Phase.ROLLING_BACK, 4, "abort", "aborted by request", weight=0)
    s = finish_rollback(s, now=5, aborted=True)
    assert s.phase is Phase.ABORTED


def test_table_refuses_illegal_transitions() -> None:
    s, _ = start(new_status(), now=0)
    s, _ = finish_promotion(advance(advance(advance(advance(s, PASS, 1)[0], PASS, 2)[0], PASS, 3)[0], PASS, 4)[0], 5)
    with pytest.raises(RolloutError, match="cannot go from succeeded"):
        transition(s, Phase.PROGRESSING, 6, "x")
    assert {Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED} == TERMINAL
    assert all(p in TRANSITIONS for p in Phase)


def test_status_round_trips_through_json() -> None:
    s, _ = start(new_status(), now=0)
    s, _ = advance(s, PASS, now=1)
    again = Status.from_json(json.loads(json.dumps(s.to_json())))
    assert again == s


@pytest.mark.parametrize("steps", [(), (0, 50), (50, 25), (10, 10), (10, 150)])
def test_bad_steps(steps) -> None:
    with pytest.raises(RolloutError):
        validate_steps(steps)


@pytest.mark.parametrize("kw", [dict(max_error_rate=1.5), dict(max_error_rate=-0.1),
                                dict(max_latency_p99_ms=0), dict(threshold=0), dict(min_requests=-1)])
def test_thresholds_out_of_range(kw) -> None:
    with pytest.raises(RolloutError, match=r"fix|range|must"):
        Thresholds(**kw)


def test_analysis() -> None:
    limits = dict(max_error_rate=0.01, max_latency_p99_ms=100.0, min_requests=20)
    assert analyse(Window(100, 0, 20.0), None, **limits).verdict is Verdict.PASS
    assert analyse(Window(10, 0, 20.0), None, **limits).verdict is Verdict.NO_DATA
    bad = analyse(Window(100, 5, 20.0), Window(900, 0, 10.0), **limits)
    assert bad.verdict is Verdict.FAIL and "error rate 5.00%" in bad.reason and "stable 0.00%" in bad.reason
    slow = analyse(Window(100, 0, 250.0), Window(900, 0, 10.0), **limits)
    assert slow.verdict is Verdict.FAIL and "p99 250.0 ms > 100 ms" in slow.reason
    assert analyse(Window(100, 0), None, canary_alive=False, **limits).verdict is Verdict.CRASHED


def test_errors_stable_shares_are_not_the_canarys_fault() -> None:
    limits = dict(max_error_rate=0.01, max_latency_p99_ms=None, min_requests=20)
    # 5% bad client requests everywhere: canary is no worse than stable.
    assert analyse(Window(100, 5), Window(900, 45), **limits).verdict is Verdict.PASS
    assert analyse(Window(100, 20), Window(900, 45), **limits).verdict is Verdict.FAIL


def test_requests_go_through_the_table() -> None:
    from orchestrator.rollout.machine import RemoveCanary, SetWeight, request

    fresh = new_status()
    assert request(fresh, "pause", 0) is None, "nothing to pause before the canary takes traffic"
    s, _ = start(fresh, now=0)
    assert request(s, "resume", 1) is None, "resume means nothing unless paused"
    paused, actions = request(s, "pause", 1)
    assert paused.phase is Phase.PAUSED and actions == []
    promoting, _ = request(paused, "promote", 2)
    assert promoting.phase is Phase.PROMOTING
    assert [r.decision for r in promoting.history[-2:]] == ["resumed", "promote"]
    aborted, actions = request(s, "abort", 3)
    assert aborted.phase is Phase.ROLLING_BACK and aborted.extra["aborted"] is True
    assert actions == [SetWeight(0), RemoveCanary()]
    done = finish_rollback(aborted, now=4, aborted=True)
    assert all(request(done, what, 5) is None for what in ("pause", "resume", "promote", "abort"))
    with pytest.raises(RolloutError, match="unknown request"):
        request(s, "restart", 6)
