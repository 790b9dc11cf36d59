"""What the rollout acceptance tests share, whatever the runtime: models, load, CLI, waits.

Versions `build_models` writes: 1 = half_plus_two (stable), 2 = half_plus_three (good canary),
3 = raises on every real input, 4 = slow (at least SLOW_S a request, calibrated on this machine
when the models are built, so a p99 threshold of P99_THRESHOLD_MS fails it whatever the speed). For x = 1.0, version 1 answers 2.5 and version 2
answers 3.5, so the load generator knows which version served each request (REST and gRPC).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.helpers.standin_image import tfsctl_command

ANSWERS = {2.5: 1, 3.5: 2}
P99_THRESHOLD_MS = 25
SLOW_S = 0.25  # ten times the threshold: measured compute alone, before any queueing
T = TypeVar("T")


def build_models(base: Path) -> None:
    """models/<name>/{1,2,3,4} as described above."""
    from tests.helpers.models import half_plus_two_tf1, matmul_iters_for

    half_plus_two_tf1(base / "1")
    half_plus_two_tf1(base / "2", b=3.0)
    half_plus_two_tf1(base / "3", fail=True)
    half_plus_two_tf1(base / "4", slow_iters=matmul_iters_for(SLOW_S))


def tfsctl(root: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tfsctl_command(), *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def start_args(name: str, version: str, steps: str, interval: str, *extra: str) -> list[str]:
    """`tfsctl rollout start` arguments for NAME."""
    return ["rollout", "start", name, "--version", version, "--steps", steps, "--interval", interval, *extra]


def tfsctl_bg(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*tfsctl_command(), *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def wait_for(condition: Callable[[], T], deadline_s: float, what: str) -> T:
    """Poll `condition` until it returns something truthy (returned); fail naming `what`."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")


@dataclass
class Load:
    """REST and gRPC requests through the router, each recorded as (time, api, version|None, error)."""

    rest_url: str
    grpc_address: str
    model: str = "hpt"
    records: list[tuple[float, str, int | None, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _rest(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                t = time.time()
                try:
                    r = session.post(
                        f"{self.rest_url}/v1/models/{self.model}:predict",
                        json={"instances": [[1.0]]},
                        timeout=10,
                    )
                    if r.status_code == 200:
                        self.records.append(
                            (t, "rest", ANSWERS.get(r.json()["predictions"][0][0]), "")
                        )
                    else:
                        self.records.append((t, "rest", None, f"{r.status_code} {r.text[:200]}"))
                except requests.RequestException as exc:
                    self.records.append((t, "rest", None, f"{type(exc).__name__}: {exc}"))

    def _grpc(self) -> None:
        from orchestrator.client import GrpcClient
        from orchestrator.client.errors import ClientServingError

        with GrpcClient(self.grpc_address) as client:
            while not self._stop.is_set():
                t = time.time()
                try:
                    out = client.predict(self.model, {"x": [[1.0]]}, timeout_s=10)
                    self.records.append((t, "grpc", ANSWERS.get(float(out["y"][0][0])), ""))
                except ClientServingError as exc:
                    self.records.append((t, "grpc", None, str(exc)[:300]))

    def __enter__(self) -> Load:
        for target in (self._rest, self._rest, self._grpc):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def failures(self) -> list[tuple[float, str, int | None, str]]:
        return [r for r in self.records if r[3]]

    def rate(self) -> float:
        """Requests per second over the whole run."""
        return len(self.records) / max(1e-9, self.records[-1][0] - self.records[0][0])


def rollout_file(root: Path, name: str = "hpt") -> Path:
    return root / ".tfso" / "rollouts" / f"{name}.json"


def wait_weight(
    root: Path,
    proc: subprocess.Popen[str],
    weight: int,
    version: int,
    deadline_s: float = 120,
    name: str = "hpt",
) -> None:
    """Wait until the rollout to `version` holds at least `weight`; fail with its output if it ends."""
    path = rollout_file(root, name)

    def reached() -> bool:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"rollout ended early ({proc.returncode}): {out}{err}")
        if not path.exists():
            return False
        data = json.loads(path.read_text())
        return data["to_version"] == version and data["weight"] >= weight

    wait_for(reached, deadline_s, f"weight {weight}")


def rollout_status(root: Path, name: str = "hpt") -> dict[str, Any]:
    run = tfsctl(root, "rollout", "status", name, "-o", "json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def weight_holds(status: dict[str, Any]) -> list[tuple[float, float, int]]:
    """(start, end, weight) of every weight the ramp held, from the rollout's history."""
    history = status["history"]
    return [
        (h["at"], history[i + 1]["at"], h["weight"])
        for i, h in enumerate(history[:-1])
        if h["phase"] == "progressing" and h["decision"].startswith("weight")
    ]


def canary_share(
    records: list[tuple[float, str, int | None, str]], start: float, end: float, edge_s: float = 0.3
) -> tuple[float, int]:
    """Percent of requests served by version 2 between start and end (edges trimmed), and n."""
    window = [r for r in records if start + edge_s <= r[0] <= end - edge_s]
    return 100 * sum(1 for r in window if r[2] == 2) / max(1, len(window)), len(window)
