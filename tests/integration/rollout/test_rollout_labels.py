"""Labels mode: stable/canary labels on the stable server, traffic split by the client's LabelSplit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.client import GrpcClient, RestClient
from orchestrator.client.split import LabelSplit
from orchestrator.runtime.base import free_port
from tests.helpers.models import half_plus_two_tf1

pytestmark = pytest.mark.integration

ANSWERS = {2.5: 1, 3.5: 2}


def tfsctl(root: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=root, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


class LabelLoad:
    """Two client threads (REST, gRPC) choosing labels with one LabelSplit, as a service would."""

    def __init__(self, root: Path, rest: str, grpc: str) -> None:
        rollouts = root / ".tfso" / "rollouts"
        self.split = LabelSplit(weights_file=rollouts / "hpt.weights.json",
                                stats_file=rollouts / "hpt.labels" / f"client-{os.getpid()}.json", refresh_s=0.2)
        self.rest, self.grpc = RestClient(rest), GrpcClient(grpc)
        self.records: list[tuple[float, str, int | None, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in (self.rest, self.grpc)]

    def _run(self, client) -> None:
        while not self._stop.is_set():
            label = self.split.choose()
            t = time.time()
            try:
                with self.split.measure(label):
                    out = client.predict("hpt", {"x": [[1.0]]}, label=label, timeout_s=10)
                self.records.append((t, label, ANSWERS.get(float(out["y"][0][0])), ""))
            except Exception as exc:  # recorded, then judged by the test
                self.records.append((t, label, None, str(exc)[:300]))

    def __enter__(self) -> LabelLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        self.split.flush()
        self.rest.close()
        self.grpc.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    root = tmp_path_factory.mktemp("labels")
    base = root / "models" / "hpt"
    half_plus_two_tf1(base / "1")
    half_plus_two_tf1(base / "2", b=3.0)
    half_plus_two_tf1(base / "3", fail=True)
    (root / "serving_configs").mkdir()
    grpc, rest = free_port(), free_port()
    (root / "serving_configs" / "hpt.yaml").write_text(
        "base_path: ../models/hpt\nversion_policy: {specific: [1]}\nversion_labels: {stable: 1}\n"
        f"ports: {{grpc: {grpc}, rest: {rest}}}\n")
    run = tfsctl(root, "deploy", "hpt", "--runtime", "local")
    assert run.returncode == 0, run.stderr
    yield root, f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc}"
    tfsctl(root, "stop", "hpt", timeout=60)


def wait_for(condition, deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_bad_canary_label_rolls_back(project) -> None:
    root, rest, grpc = project
    with LabelLoad(root, rest, grpc) as load:
        wait_for(lambda: len(load.records) > 30, 30, "load")
        run = tfsctl(root, "rollout", "start", "hpt", "--mode", "labels", "--version", "3", "--steps", "25,50,100",
                     "--interval", "2s", "--min-requests", "10", "--threshold", "2")
    assert run.returncode == 1, run.stdout + run.stderr
    status = json.loads(tfsctl(root, "rollout", "status", "hpt", "-o", "json").stdout)
    assert status["phase"] == "failed" and "error rate" in status["message"]
    assert all(r[1] == "canary" and "canary_bad" in r[3] for r in load.records if r[3])
    stable_failures = [r for r in load.records if r[3] and r[1] == "stable"]
    assert stable_failures == [], stable_failures[:3]
    # The canary label and version 3 are gone again; stable still answers.
    rest_client = RestClient(rest)
    assert [v.version for v in rest_client.status("hpt") if v.state == "AVAILABLE"] == [1]
    assert float(rest_client.predict("hpt", {"x": [[1.0]]}, label="stable")["y"][0][0]) == 2.5


def test_good_canary_label_promotes_with_exact_shares(project) -> None:
    root, rest, grpc = project
    with LabelLoad(root, rest, grpc) as load:
        wait_for(lambda: len(load.records) > 30, 30, "load")
        run = tfsctl(root, "rollout", "start", "hpt", "--mode", "labels", "--version", "2", "--steps", "10,50,100",
                     "--interval", "3s", "--min-requests", "10")
        # Traffic keeps flowing after promotion: wait for 50 more requests.
        after_run = len(load.records)
        wait_for(lambda: len(load.records) > after_run + 50, 60, "requests after promotion")
    assert run.returncode == 0, run.stdout + run.stderr
    assert [r for r in load.records if r[3]] == []
    status = json.loads(tfsctl(root, "rollout", "status", "hpt", "-o", "json").stdout)
    history = status["history"]
    holds = [(h["at"], history[i + 1]["at"], h["weight"]) for i, h in enumerate(history[:-1])
             if h["phase"] == "progressing" and h["decision"].startswith("weight")]
    assert [w for _, _, w in holds] == [10, 50, 100]
    for start, end, weight in holds:
        window = [r for r in load.records if start + 0.5 <= r[0] <= end - 0.2]
        share = 100 * sum(1 for r in window if r[2] == 2) / len(window)
        assert abs(share - weight) <= 5, (weight, share, len(window))
    rest_client = RestClient(rest)
    assert [v.version for v in rest_client.status("hpt") if v.state == "AVAILABLE"] == [2]
    assert float(rest_client.predict("hpt", {"x": [[1.0]]}, label="stable")["y"][0][0]) == 3.5
    spec = (root / "serving_configs" / "hpt.yaml").read_text()
    assert "specific: [2]" in spec and "stable: 2" in spec
