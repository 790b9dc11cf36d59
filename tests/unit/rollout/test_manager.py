"""The rollout manager against a fake target (passed in through the constructor), a fake
clock, and real webhook endpoints on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator.rollout.machine import Phase, Thresholds
from orchestrator.rollout.manager import RolloutManager, RolloutStore, new_status
from orchestrator.rollout.metrics import Snapshot
from orchestrator.rollout.target import RolloutTarget
from orchestrator.rollout.webhooks import Webhooks
from orchestrator.state import StateStore


class FakeTarget(RolloutTarget):
    """Canary traffic grows by `rate` requests per sample, `error_share` of them failing."""

    def __init__(self, rate: int = 100, error_share: float = 0.0) -> None:
        self.rate, self.error_share = rate, error_share
        self.calls: list[tuple[str, object]] = []
        self.alive = True
        self._canary = Snapshot()
        self._stable = Snapshot()

    def start_canary(self, version: int) -> None:
        self.calls.append(("start_canary", version))

    def canary_alive(self) -> bool:
        return self.alive

    def set_weight(self, percent: int) -> None:
        self.calls.append(("weight", percent))

    def sample(self) -> dict[str, Snapshot]:
        errors = int(self.rate * self.error_share)
        buckets = {1000.0: self._canary.requests + self.rate, float("inf"): self._canary.requests + self.rate}
        self._canary = Snapshot(self._canary.requests + self.rate, self._canary.errors + errors, buckets)
        self._stable = Snapshot(self._stable.requests + self.rate, 0, buckets)
        return {"canary": self._canary, "stable": self._stable}

    def promote(self, version: int) -> None:
        self.calls.append(("promote", version))

    def remove_canary(self) -> None:
        self.calls.append(("remove_canary", None))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.01)


@pytest.fixture
def store(tmp_path: Path) -> RolloutStore:
    return RolloutStore(StateStore(tmp_path))


def status_for(**kw):
    defaults = dict(steps=(10, 50, 100), interval_s=5.0, thresholds=Thresholds(min_requests=10, threshold=2), now=1000.0)
    defaults.update(kw)
    return new_status("m", "m", 1, 2, **defaults)


def manager(target, store, clock, **kw) -> RolloutManager:
    return RolloutManager(target, store, clock=clock, sleep=clock.sleep, **kw)


def test_good_canary_promotes_and_persists_every_step(store: RolloutStore) -> None:
    target, clock, seen = FakeTarget(), Clock(), []
    final = manager(target, store, clock, on_step=lambda s: seen.append(s.phase)).run(status_for())
    assert final.phase is Phase.SUCCEEDED
    weights = [arg for call, arg in target.calls if call == "weight"]
    assert weights[:3] == [10, 50, 100] and ("promote", 2) in target.calls
    assert target.calls[-1] == ("remove_canary", None)
    saved = json.loads(store.path("m").read_text())
    assert saved["phase"] == "succeeded" and saved["extra"]["owner_pid"]
    assert seen[0] is Phase.INITIALIZING and Phase.PROMOTING in seen


def test_errors_roll_back_after_threshold(store: RolloutStore) -> None:
    target, clock = FakeTarget(error_share=0.2), Clock()
    final = manager(target, store, clock).run(status_for())
    assert final.phase is Phase.FAILED and "2 failed checks" in final.message
    assert ("promote", 2) not in target.calls and ("remove_canary", None) in target.calls
    assert [arg for call, arg in target.calls if call == "weight"][-1] == 0


def test_quiet_traffic_holds_then_abort_request_rolls_back(store: RolloutStore) -> None:
    target, clock = FakeTarget(rate=2), Clock()
    m = manager(target, store, clock)
    status = m.tick(status_for())  # initializing -> progressing at 10%
    for _ in range(200):
        status = m.tick(status)
    assert status.phase is Phase.PROGRESSING and status.weight == 10 and status.failed_checks == 0
    assert status.history[-1].decision == "halt: no data"
    store.request("m", "abort")
    final = m.run(status)
    assert final.phase is Phase.ABORTED and ("remove_canary", None) in target.calls


def test_pause_and_resume_requests(store: RolloutStore) -> None:
    target, clock = FakeTarget(), Clock()
    m = manager(target, store, clock)
    status = m.tick(status_for())
    store.request("m", "pause")
    status = m.tick(status)
    assert status.phase is Phase.PAUSED
    for _ in range(50):
        status = m.tick(status)
    assert status.phase is Phase.PAUSED and status.weight == 10
    store.request("m", "resume")
    assert m.run(m.tick(status)).phase is Phase.SUCCEEDED


def test_crashed_canary_rolls_back(store: RolloutStore) -> None:
    target, clock = FakeTarget(), Clock()
    m = manager(target, store, clock)
    status = m.tick(status_for())
    target.alive = False
    final = m.run(status)
    assert final.phase is Phase.FAILED and "crashed" in final.message


@pytest.fixture
def hooks() -> Iterator[tuple[str, list[dict], dict[str, int]]]:
    """A webhook endpoint on 127.0.0.1 answering the status code set per kind."""
    received: list[dict] = []
    codes: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(body)
            self.send_response(codes.get(body["kind"], 200))
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received, codes
    server.shutdown()


def test_webhooks_gate_each_move(store: RolloutStore, hooks) -> None:
    url, received, codes = hooks
    webhooks = Webhooks.parse([f"{k}={url}" for k in ("pre-rollout", "step", "promote", "rollback")])
    final = manager(FakeTarget(), store, Clock(), webhooks=webhooks).run(status_for())
    assert final.phase is Phase.SUCCEEDED
    kinds = [r["kind"] for r in received]
    assert kinds[0] == "pre-rollout" and kinds.count("step") == 3 and kinds[-1] == "promote"

    received.clear()
    codes["pre-rollout"] = 503
    target = FakeTarget()
    final = manager(target, RolloutStore(StateStore(store.root.parent / "b")), Clock(), webhooks=webhooks).run(status_for())
    assert final.phase is Phase.FAILED and "pre-rollout webhook" in final.message
    assert ("start_canary", 2) not in target.calls and received[-1]["kind"] == "rollback"

    codes.clear()
    codes["step"] = 500
    final = manager(FakeTarget(), RolloutStore(StateStore(store.root.parent / "c")), Clock(),
                    webhooks=webhooks).run(status_for())
    assert final.phase is Phase.FAILED and "step webhook" in final.message


def test_bad_webhook_flag() -> None:
    from orchestrator.errors import RolloutError

    with pytest.raises(RolloutError, match="KIND=URL"):
        Webhooks.parse(["nope"])


def test_owner_check_compares_start_times() -> None:
    """A reused pid (same pid, another start time) is not the rollout's controller."""
    import dataclasses
    import os
    import subprocess
    import sys

    from orchestrator.procs import start_ticks
    from orchestrator.rollout.manager import owner_alive

    status = new_status("owner", "m", 1, 2, steps=(50, 100), interval_s=1.0, thresholds=Thresholds())
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        started = start_ticks(child.pid)
        assert started is not None
        same = dataclasses.replace(status, extra={"owner_pid": child.pid, "owner_start": started})
        reused = dataclasses.replace(status, extra={"owner_pid": child.pid, "owner_start": started + 1})
        assert owner_alive(same)
        assert not owner_alive(reused)
        assert not owner_alive(dataclasses.replace(status, extra={"owner_pid": os.getpid()}))
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(timeout=10)
    assert not owner_alive(same)
