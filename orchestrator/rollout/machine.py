"""The canary rollout as an explicit state machine: one transition table, one step function.

    initializing ──► progressing (step i of n) ──► promoting ──► succeeded
         │             │    ▲   │                      │
         │             ▼    │   │                      │
         │           paused ┘   │                      │
         └──────────────────────┴──► rolling_back ◄────┘
                                        │
                                        ├──► failed    (checks failed, canary crashed, deadline)
                                        └──► aborted   (asked to)

`advance` is pure: it takes the status, this interval's analysis and "now", and returns the
new status plus the actions the manager must carry out; `request` does the same for a pause,
resume, promote or abort asked from another shell. Every phase change goes through
`transition`, checked against TRANSITIONS; the manager persists the status before acting.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from orchestrator.errors import RolloutError
from orchestrator.rollout.analysis import Analysis, Verdict


class Phase(str, Enum):
    INITIALIZING = "initializing"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTING = "promoting"
    SUCCEEDED = "succeeded"
    ROLLING_BACK = "rolling_back"
    FAILED = "failed"
    ABORTED = "aborted"


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.INITIALIZING: frozenset({Phase.PROGRESSING, Phase.ROLLING_BACK}),
    Phase.PROGRESSING: frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING, Phase.ROLLING_BACK}),
    Phase.PAUSED: frozenset({Phase.PROGRESSING, Phase.ROLLING_BACK}),
    Phase.PROMOTING: frozenset({Phase.SUCCEEDED, Phase.ROLLING_BACK}),
    Phase.ROLLING_BACK: frozenset({Phase.FAILED, Phase.ABORTED}),
    Phase.SUCCEEDED: frozenset(),
    Phase.FAILED: frozenset(),
    Phase.ABORTED: frozenset(),
}
TERMINAL = frozenset(p for p, nxt in TRANSITIONS.items() if not nxt)


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float = 0.01
    max_latency_p99_ms: float | None = None
    min_requests: int = 20
    threshold: int = 2  # failed checks that trigger a rollback
    max_drift: float | None = None  # canary vs stable output PSI over a window (payload logs)
    min_agreement: float | None = None  # shadow mode: share of mirrored answers like stable's
    min_output_rows: int = 100  # logged answers per side below which outputs are "no data"
    tolerance: float = 1e-3  # shadow mode: a regressor's answer agrees within this abs diff

    def __post_init__(self) -> None:
        if self.max_drift is not None and self.max_drift <= 0:
            raise RolloutError(f"--max-drift {self.max_drift} must be positive",
                               fix="give a PSI limit, e.g. --max-drift 0.2 (0.1 small, 0.25 large shift)")
        if self.min_agreement is not None and not 0.0 < self.min_agreement <= 1.0:
            raise RolloutError(f"--min-agreement {self.min_agreement} is out of range",
                               fix="give a fraction in (0, 1], e.g. --min-agreement 0.99")
        if self.min_output_rows < 1:
            raise RolloutError("--min-output-rows must be ≥ 1", fix="e.g. --min-output-rows 100")
        if self.tolerance < 0:
            raise RolloutError("--tolerance must be ≥ 0", fix="e.g. --tolerance 0.001")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise RolloutError(f"--max-error-rate {self.max_error_rate} is out of range",
                               fix="give a fraction between 0 and 1, e.g. 0.01")
        if self.max_latency_p99_ms is not None and self.max_latency_p99_ms <= 0:
            raise RolloutError(f"--max-latency-p99-ms {self.max_latency_p99_ms} must be positive",
                               fix="give milliseconds, e.g. 250")
        if self.min_requests < 0:
            raise RolloutError("--min-requests must be ≥ 0", fix="e.g. --min-requests 20")
        if self.threshold < 1:
            raise RolloutError("--threshold must be ≥ 1", fix="e.g. --threshold 2")


def validate_steps(steps: Sequence[int]) -> tuple[int, ...]:
    if not steps:
        raise RolloutError("--steps is empty", fix="e.g. --steps 10,25,50,100")
    if any(s < 1 or s > 100 for s in steps) or any(b <= a for a, b in itertools.pairwise(steps)):
        raise RolloutError(f"--steps {','.join(map(str, steps))}: weights must rise strictly within 1..100",
                           fix="e.g. --steps 10,25,50,100")
    return tuple(steps)


@dataclass(frozen=True)
class Record:
    """One line of history: what was measured and decided at a moment."""

    at: float
    phase: str
    weight: int
    decision: str
    reason: str = ""
    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    p99_ms: float | None = None
    source: str = ""  # where requests and errors were counted
    drift_psi: float | None = None  # canary vs stable outputs (--max-drift)
    agreement: float | None = None  # shadow answers like stable's (--min-agreement)


@dataclass(frozen=True)
class Status:
    """Everything needed to resume a rollout, persisted as JSON after every step."""

    name: str
    model: str
    from_version: int
    to_version: int
    steps: tuple[int, ...]
    interval_s: float
    thresholds: Thresholds
    mode: str = "replicas"
    phase: Phase = Phase.INITIALIZING
    step_index: int = -1  # index into steps of the current weight; -1 before the first
    weight: int = 0
    failed_checks: int = 0
    started_at: float = 0.0
    updated_at: float = 0.0
    next_check_at: float = 0.0
    message: str = ""
    history: tuple[Record, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["phase"] = self.phase.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Status:
        data = dict(data)
        data["phase"] = Phase(data["phase"])
        data["steps"] = tuple(data["steps"])
        data["thresholds"] = Thresholds(**data["thresholds"])
        data["history"] = tuple(Record(**r) for r in data.get("history", ()))
        return cls(**data)


# Actions the manager carries out, in order.
@dataclass(frozen=True)
class SetWeight:
    weight: int


@dataclass(frozen=True)
class Promote:
    pass


@dataclass(frozen=True)
class RemoveCanary:
    pass


Action = SetWeight | Promote | RemoveCanary


def transition(status: Status, phase: Phase, now: float, decision: str, reason: str = "",
               analysis: Analysis | None = None, **changes: Any) -> Status:
    """The only way a phase changes; refuses what the table does not allow."""
    if phase not in TRANSITIONS[status.phase]:
        raise RolloutError(f"rollout {status.name}: cannot go from {status.phase.value} to {phase.value}",
                           fix="see `tfsctl rollout status`; a finished rollout cannot change")
    weight = changes.get("weight", status.weight)
    record = Record(
        at=now, phase=phase.value, weight=weight, decision=decision, reason=reason,
        requests=analysis.requests if analysis else 0, errors=analysis.errors if analysis else 0,
        error_rate=analysis.error_rate if analysis else None, p99_ms=analysis.p99_ms if analysis else None,
        source=analysis.source if analysis else "",
        drift_psi=analysis.drift_psi if analysis else None, agreement=analysis.agreement if analysis else None,
    )
    return dataclasses.replace(status, phase=phase, updated_at=now, message=reason or decision,
                               history=(*status.history, record), **changes)


def start(status: Status, now: float) -> tuple[Status, list[Action]]:
    """Canary is AVAILABLE: go to the first weight."""
    first = status.steps[0]
    new = transition(status, Phase.PROGRESSING, now, f"weight {first}%", "canary AVAILABLE",
                     step_index=0, weight=first, started_at=status.started_at or now,
                     next_check_at=now + status.interval_s)
    return new, [SetWeight(first)]


def advance(status: Status, analysis: Analysis, now: float) -> tuple[Status, list[Action]]:
    """One analysis interval: next weight, hold (no data), count a failure, roll back or promote."""
    if status.phase is not Phase.PROGRESSING:
        return status, []
    if analysis.verdict is Verdict.CRASHED:
        return rollback(status, now, f"canary crashed: {analysis.reason}", analysis)
    if analysis.verdict is Verdict.FAIL:
        failed = status.failed_checks + 1
        if failed >= status.thresholds.threshold:
            return rollback(status, now, f"{failed} failed checks: {analysis.reason}", analysis,
                            failed_checks=failed)
        return transition(status, Phase.PROGRESSING, now, "check failed", analysis.reason, analysis,
                          failed_checks=failed, next_check_at=now + status.interval_s), []
    if analysis.verdict is Verdict.NO_DATA:
        return transition(status, Phase.PROGRESSING, now, "halt: no data", analysis.reason, analysis,
                          next_check_at=now + status.interval_s), []
    # passed
    if status.step_index + 1 >= len(status.steps):
        return transition(status, Phase.PROMOTING, now, "promote", "every step passed", analysis,
                          failed_checks=0), [Promote()]
    index = status.step_index + 1
    weight = status.steps[index]
    return transition(status, Phase.PROGRESSING, now, f"weight {weight}%", analysis.reason, analysis,
                      step_index=index, weight=weight, failed_checks=0,
                      next_check_at=now + status.interval_s), [SetWeight(weight)]


def rollback(status: Status, now: float, reason: str, analysis: Analysis | None = None,
             **changes: Any) -> tuple[Status, list[Action]]:
    new = transition(status, Phase.ROLLING_BACK, now, "roll back", reason, analysis, weight=0, **changes)
    return new, [SetWeight(0), RemoveCanary()]


def finish_rollback(status: Status, now: float, *, aborted: bool = False) -> Status:
    phase = Phase.ABORTED if aborted else Phase.FAILED
    return transition(status, phase, now, phase.value, status.message)


def finish_promotion(status: Status, now: float) -> tuple[Status, list[Action]]:
    new = transition(status, Phase.SUCCEEDED, now, "succeeded",
                     f"every replica serves version {status.to_version}", weight=0)
    return new, [SetWeight(0), RemoveCanary()]


def pause(status: Status, now: float) -> Status:
    return transition(status, Phase.PAUSED, now, "paused", "paused by request")


def resume(status: Status, now: float) -> Status:
    if status.phase is Phase.PAUSED:
        return transition(status, Phase.PROGRESSING, now, "resumed", "resumed by request",
                          next_check_at=now + status.interval_s)
    return status


REQUESTS = ("pause", "resume", "promote", "abort")


def request(status: Status, what: str, now: float) -> tuple[Status, list[Action]] | None:
    """A request from another shell as transitions of the table; None when it means nothing in
    this phase (pause when not progressing, resume when not paused, anything once finished)."""
    if what == "abort":
        if Phase.ROLLING_BACK not in TRANSITIONS[status.phase] or status.phase is Phase.ROLLING_BACK:
            return None
        new, actions = rollback(status, now, "aborted by request")
        return dataclasses.replace(new, extra={**new.extra, "aborted": True}), actions
    if what == "pause":
        return (pause(status, now), []) if Phase.PAUSED in TRANSITIONS[status.phase] else None
    if what == "resume":
        return (resume(status, now), []) if status.phase is Phase.PAUSED else None
    if what == "promote":
        if status.phase not in (Phase.PROGRESSING, Phase.PAUSED):
            return None
        status = resume(status, now)  # a paused rollout resumes, then promotes: both recorded
        return transition(status, Phase.PROMOTING, now, "promote", "promoted by request"), []
    raise RolloutError(f"unknown request {what!r}", fix=f"ask one of: {', '.join(REQUESTS)}")
