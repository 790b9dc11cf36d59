"""Runs a rollout: applies the state machine's actions to a target, persisting every step.

The status file (`.tfso/rollouts/NAME.json`) is written before each action is carried out, so a
killed controller leaves an exact record: `resume` continues from it, `abort` rolls back from it.
Another shell asks a running controller to pause, resume, promote or abort through a request
file the loop reads each tick; a controller that is gone is taken over instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from orchestrator import procs
from orchestrator.errors import OrchestratorError, RolloutError
from orchestrator.rollout import machine
from orchestrator.rollout.analysis import Outputs, Verdict, analyse
from orchestrator.rollout.machine import Phase, Status
from orchestrator.rollout.metrics import Snapshot
from orchestrator.rollout.target import RolloutTarget, window
from orchestrator.rollout.webhooks import Webhooks
from orchestrator.state import StateStore, write_atomic

REQUESTS = machine.REQUESTS


class RolloutStore:
    def __init__(self, store: StateStore | None = None) -> None:
        self.root = (store or StateStore()).root / "rollouts"

    def path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def load(self, name: str) -> Status | None:
        try:
            return Status.from_json(json.loads(self.path(name).read_text()))
        except FileNotFoundError:
            return None

    def save(self, status: Status) -> None:
        write_atomic(self.path(status.name), json.dumps(status.to_json(), indent=2) + "\n")

    def request(self, name: str, what: str) -> None:
        if what not in REQUESTS:
            raise RolloutError(f"unknown request {what!r}")
        write_atomic(self.root / f"{name}.request", what)

    def take_request(self, name: str) -> str | None:
        path = self.root / f"{name}.request"
        try:
            what = path.read_text().strip()
        except FileNotFoundError:
            return None
        path.unlink(missing_ok=True)
        return what or None


def owner_alive(status: Status) -> bool:
    """Another process drives this rollout: its pid runs and started when the recorded one did."""
    pid = status.extra.get("owner_pid")
    if not pid or pid == os.getpid():
        return False
    return procs.process_alive(pid, status.extra.get("owner_start"), OWNER_MARKERS)


OWNER_MARKERS = ("orchestrator", "tfsctl")  # checked only for statuses saved without a start time
_OWN_START = procs.start_ticks(os.getpid())

OnStep = Callable[[Status], None]


class OutputSource(Protocol):
    """Canary and stable answers since a time (payload logs, or shadow replies); the CLI passes
    one (`monitor.gates`), so the rollout does not import the monitor."""

    def compare(self, since_ts: float) -> Outputs | None: ...


class RolloutManager:
    def __init__(self, target: RolloutTarget, store: RolloutStore, *, webhooks: Webhooks | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 tick_s: float = 0.1, on_step: OnStep | None = None,
                 outputs: OutputSource | None = None) -> None:
        self.target = target
        self.outputs = outputs
        self._window_start = 0.0  # where the current outputs window began (a weight change)
        self.store = store
        self.webhooks = webhooks or Webhooks()
        self.clock = clock
        self.sleep = sleep
        self.tick_s = tick_s
        self.on_step = on_step
        self._before: dict[str, Snapshot] = {}

    def _save(self, status: Status) -> Status:
        status = dataclasses.replace(status, extra={**status.extra, "owner_pid": os.getpid(), "owner_start": _OWN_START})
        self.store.save(status)
        if self.on_step:
            self.on_step(status)
        return status

    def _apply(self, status: Status, actions: list[machine.Action]) -> Status:
        status = self._save(status)
        for action in actions:
            if isinstance(action, machine.SetWeight):
                self.target.set_weight(action.weight)
                self._before = self.target.sample()
                self._window_start = self.clock()
            elif isinstance(action, machine.RemoveCanary):
                self.target.remove_canary()
            elif isinstance(action, machine.Promote):
                pass  # handled in the promoting phase, so a crash mid-promotion resumes there
        return status

    def run(self, status: Status) -> Status:
        """Drive the rollout until it is finished; returns the final status."""
        while not status.terminal:
            status = self.tick(status)
        return status

    def request(self, status: Status, what: str) -> Status:
        """Carry out `what` here, for a rollout whose controller is gone: a pause returns once
        paused; abort and promote run the rollout to its end."""
        self.store.request(status.name, what)
        status = self.tick(status)
        return status if what == "pause" else self.run(status)

    def tick(self, status: Status) -> Status:
        """One step: a pending request first (through the machine's table), else the phase's work."""
        now = self.clock()
        request = self.store.take_request(status.name)
        handled = machine.request(status, request, now) if request in REQUESTS else None
        if handled is not None:
            status, actions = handled
            if status.phase is Phase.ROLLING_BACK:
                return self._finish_rollback(self._apply(status, actions))
            return self._save(status)

        if status.phase is Phase.INITIALIZING:
            return self._initialize(status, now)
        if status.phase is Phase.PROGRESSING:
            return self._progress(status, now)
        if status.phase is Phase.PROMOTING:
            return self._promote(status)
        if status.phase is Phase.ROLLING_BACK:
            self.target.set_weight(0)
            self.target.remove_canary()
            return self._finish_rollback(status)
        self.sleep(self.tick_s)  # paused
        return status

    def _initialize(self, status: Status, now: float) -> Status:
        status = self._save(status)
        try:
            self.webhooks.call("pre-rollout", status)
            self.target.start_canary(status.to_version)
        except OrchestratorError as exc:
            status, actions = machine.rollback(status, self.clock(), f"canary did not start: {exc.message}")
            return self._finish_rollback(self._apply(status, actions))
        status, actions = machine.start(status, self.clock())
        return self._apply(status, actions)

    def _progress(self, status: Status, now: float) -> Status:
        if not self._before:
            self._before = self.target.sample()
        alive = self.target.canary_alive()
        if alive and now < status.next_check_at:
            self.sleep(min(self.tick_s, status.next_check_at - now))
            return status
        after = self.target.sample()
        canary = window(after["canary"], self._before.get("canary", Snapshot()))
        stable = window(after["stable"], self._before.get("stable", Snapshot()))
        self._before = after
        t = status.thresholds
        outputs = None
        if self.outputs is not None and (t.max_drift is not None or t.min_agreement is not None):
            # The outputs window is the whole step so far: a step held for no data keeps its rows.
            outputs = self.outputs.compare(self._window_start or status.next_check_at - status.interval_s)
        result = analyse(canary, stable, max_error_rate=t.max_error_rate, max_latency_p99_ms=t.max_latency_p99_ms,
                         min_requests=t.min_requests, canary_alive=alive, outputs=outputs,
                         max_drift=t.max_drift, min_agreement=t.min_agreement, min_rows=t.min_output_rows)
        if result.verdict is Verdict.FAIL:
            self._window_start = now  # the next check judges fresh rows
        if result.verdict is Verdict.PASS:
            try:
                self.webhooks.call("step", status)
            except RolloutError as exc:
                result = dataclasses.replace(result, verdict=Verdict.FAIL, reason=f"step webhook: {exc.message}")
        status, actions = machine.advance(status, result, self.clock())
        status = self._apply(status, actions)
        if status.phase is Phase.ROLLING_BACK:
            return self._finish_rollback(status)
        return status

    def _promote(self, status: Status) -> Status:
        try:
            self.webhooks.call("promote", status)
            self.target.set_weight(100)
            self.target.promote(status.to_version)
        except OrchestratorError as exc:
            status, actions = machine.rollback(status, self.clock(), f"promotion failed: {exc.message}")
            return self._finish_rollback(self._apply(status, actions))
        status, actions = machine.finish_promotion(status, self.clock())
        return self._apply(status, actions)

    def _finish_rollback(self, status: Status) -> Status:
        self.webhooks.notify("rollback", status)
        return self._save(machine.finish_rollback(status, self.clock(), aborted=bool(status.extra.get("aborted"))))


def new_status(name: str, model: str, from_version: int, to_version: int, *, steps: tuple[int, ...],
               interval_s: float, thresholds: machine.Thresholds, mode: str = "replicas",
               now: float | None = None, **extra: Any) -> Status:
    now = time.time() if now is None else now
    return Status(name=name, model=model, from_version=from_version, to_version=to_version,
                  steps=machine.validate_steps(steps), interval_s=interval_s, thresholds=thresholds,
                  mode=mode, started_at=now, updated_at=now, extra=dict(extra))
