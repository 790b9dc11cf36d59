"""Canary rollouts on the local runtime: real server processes, real HAProxy, real load.

Shared with the Docker suite (`tests/helpers/rollout.py`): versions 1 = half_plus_two (stable), 2 = half_plus_three (good canary), 3 = raises on every
real input, 4 = slow. For x = 1.0, version 1 answers 2.5 and version 2 answers 3.5, so the
load generator knows which version served each request (REST and gRPC alike).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from orchestrator.runtime.base import free_port
from tests.helpers.requires import require_haproxy
from tests.helpers.rollout import (
    P99_THRESHOLD_MS,
    Load,
    build_models,
    canary_share,
    rollout_status,
    start_args,
    tfsctl,
    tfsctl_bg,
    wait_for,
    wait_weight,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, scope="module")
def _needs_haproxy() -> None:
    require_haproxy()  # fails under CI, skips with what to install elsewhere


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rollout")
    build_models(root / "models" / "hpt")
    (root / "serving_configs").mkdir()
    return root


def serving_versions(root: Path) -> set[int]:
    states = json.loads(tfsctl(root, "status", "hpt", "-o", "json").stdout)
    return {v["version"] for r in states["replicas"] for m in r["models"] for v in m["versions"]
            if v["state"] == "AVAILABLE"}


def stable_spec(grpc: int, rest: int) -> str:
    return ("base_path: ../models/hpt\nversion_policy: {specific: [1]}\nversion_labels: {stable: 1}\n"
            f"router: true\nreplicas: 2\nports: {{grpc: {grpc}, rest: {rest}}}\n")


def remove_rollout(project: Path) -> None:
    """Abort whatever rollout a test left and kill a canary that outlived it."""
    tfsctl(project, "rollout", "abort", "hpt", timeout=120)
    canary = project / ".tfso" / "deployments" / "hpt.canary.json"
    if canary.exists():
        for r in json.loads(canary.read_text())["replicas"]:
            try:
                os.killpg(r["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def deployment(project: Path) -> Iterator[tuple[Path, str, str, str]]:
    """One deployment for the module's scenarios (2 replicas and the router), stopped at the end."""
    grpc, rest = free_port(), free_port()
    spec = stable_spec(grpc, rest)
    (project / "serving_configs" / "hpt.yaml").write_text(spec)
    run = tfsctl(project, "deploy", "hpt", "--runtime", "local")
    assert run.returncode == 0, run.stderr
    try:
        yield project, f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc}", spec
    finally:
        remove_rollout(project)
        tfsctl(project, "stop", "hpt", timeout=60)


@pytest.fixture
def deployed(deployment) -> Iterator[tuple[Path, str, str]]:
    """The deployment on version 1 (hot-reloaded back if a test promoted), no rollout record."""
    project, rest, grpc, spec = deployment
    path = project / "serving_configs" / "hpt.yaml"
    current = yaml.safe_load(path.read_text())
    served = current["version_policy"]["specific"]
    if served != [1]:
        # A test promoted: load 1 beside the served version first (a label may only move to a
        # version that is already AVAILABLE), then go back to the stable spec.
        path.write_text(yaml.safe_dump({**current, "version_policy": {"specific": sorted({1, *served})}}))
        run = tfsctl(project, "deploy", "hpt", "--runtime", "local")
        assert run.returncode == 0, run.stdout + run.stderr
    path.write_text(spec)
    run = tfsctl(project, "deploy", "hpt", "--runtime", "local")
    assert run.returncode == 0, run.stdout + run.stderr
    shutil.rmtree(project / ".tfso" / "rollouts", ignore_errors=True)
    assert serving_versions(project) == {1}
    assert not canary_running(project)
    try:
        yield project, rest, grpc
    finally:
        remove_rollout(project)


def canary_running(root: Path) -> bool:
    return (root / ".tfso" / "deployments" / "hpt.canary.json").exists()


def stable_pids(root: Path) -> list[int]:
    return [
        r["pid"]
        for r in json.loads((root / ".tfso" / "deployments" / "hpt.json").read_text())["replicas"]
    ]


def test_good_canary_ramps_with_zero_failed_requests_then_promotes(deployed) -> None:
    root, rest, grpc = deployed
    with Load(rest, grpc) as load:
        wait_for(lambda: len(load.records) > 50, 30, "load to start")
        run = tfsctl(
            root,
            "rollout",
            "start",
            "hpt",
            "--version",
            "2",
            "--steps",
            "10,50,100",  # a ramp: two partial weights, each measured, then all
            "--interval",
            "4s",
            "--min-requests",
            "20",
        )
        # Requests keep flowing after promotion, through the router: wait for 100 more.
        after_run = len(load.records)
        wait_for(lambda: len(load.records) > after_run + 100, 60, "requests after promotion")
    assert run.returncode == 0, run.stdout + run.stderr
    assert load.failures() == [], load.failures()[:5]

    status = rollout_status(root)
    assert status["phase"] == "succeeded"
    # Observed canary share per step: requests sent while each weight held (edges trimmed).
    history = status["history"]
    holds = [
        (h["at"], history[i + 1]["at"], h["weight"])
        for i, h in enumerate(history[:-1])
        if h["phase"] == "progressing" and h["decision"].startswith("weight")
    ]
    assert [w for _, _, w in holds] == [10, 50, 100]
    for start, end, weight in holds:
        share, n = canary_share(load.records, start, end)
        # The controller holds each weight until --min-requests (20) reached the canary, so n does
        # not depend on the machine's speed; round robin is exact, one request of slack per window.
        assert n >= 20, n
        assert abs(share - weight) <= 5 + 100 / n, (weight, share, n)
    # Afterwards every replica serves version 2 (label moved with it) and the spec says so.
    answers = {
        requests.post(
            f"{rest}/v1/models/hpt:predict", json={"instances": [[1.0]]}, timeout=5
        ).json()["predictions"][0][0]
        for _ in range(20)
    }
    assert answers == {3.5}
    labelled = requests.post(
        f"{rest}/v1/models/hpt/labels/stable:predict", json={"instances": [[1.0]]}, timeout=5
    )
    assert labelled.json() == {"predictions": [[3.5]]}
    assert "specific: [2]" in (root / "serving_configs" / "hpt.yaml").read_text()
    assert not canary_running(root)
    report = tfsctl(root, "rollout", "report", "hpt", "--out", str(root / "report.png"))
    assert report.returncode == 0, report.stderr
    assert (root / "report.png").stat().st_size > 1000
    assert json.loads((root / "report.json").read_text())["rows"]


# The slow canary answers in at least SLOW_S, so a 3 s window held as few as 2 of its requests
# (under --min-requests 10: "no data" until the timeout) when the suite's other modules shared
# the 2 cores; a 6 s window holds twice as many.
@pytest.mark.parametrize(
    ("version", "interval", "extra", "why"),
    [
        ("3", "3s", [], "error rate"),
        ("4", "6s", ["--max-latency-p99-ms", str(P99_THRESHOLD_MS)], "p99"),
    ],
)
def test_bad_canary_rolls_back_and_stable_never_fails(
    deployed, version: str, interval: str, extra: list[str], why: str
) -> None:
    root, rest, grpc = deployed
    pids = stable_pids(root)
    with Load(rest, grpc) as load:
        wait_for(lambda: len(load.records) > 50, 30, "load to start")
        run = tfsctl(
            root,
            "rollout",
            "start",
            "hpt",
            "--version",
            version,
            "--steps",
            "25,50,100",
            "--interval",
            interval,
            "--min-requests",
            "10",
            "--threshold",
            "2",
            *extra,
        )
    assert run.returncode == 1, run.stdout + run.stderr
    status = rollout_status(root)
    assert status["phase"] == "failed" and why in status["message"]
    checks = [h for h in status["history"] if h["decision"] in ("check failed", "roll back")]
    assert len(checks) == 2, "rolled back after exactly `threshold` failed intervals"
    assert [h["weight"] for h in status["history"] if h["decision"].startswith("weight")] == [25]
    # Stable never failed: every failure is the canary's own error.
    assert all("canary_bad" in r[3] for r in load.failures()), load.failures()[:5]
    assert stable_pids(root) == pids and not canary_running(root)
    assert requests.post(
        f"{rest}/v1/models/hpt:predict", json={"instances": [[1.0]]}, timeout=5
    ).json() == {"predictions": [[2.5]]}


def test_killed_controller_resume_and_abort(deployed) -> None:
    root, rest, grpc = deployed
    with Load(rest, grpc) as load:
        wait_for(lambda: len(load.records) > 50, 30, "load to start")
        proc = tfsctl_bg(root, *start_args("hpt", "2", "10,25,100", "3s", "--min-requests", "10"))
        wait_weight(root, proc, 25, 2)
        proc.kill()
        proc.wait(timeout=10)
        status = rollout_status(root)
        assert (
            status["phase"] == "progressing"
            and status["weight"] >= 25
            and status["controller_running"] is False
        )
        shown = tfsctl(root, "rollout", "status", "hpt")
        assert "progressing" in shown.stdout and "not running" in shown.stdout
        # A second start is refused while this one is unfinished.
        again = tfsctl(root, "rollout", "start", "hpt", "--version", "2")
        assert again.returncode == 7 and "already progressing" in again.stderr
        run = tfsctl(root, "rollout", "resume", "hpt")
        assert run.returncode == 0, run.stdout + run.stderr
    assert rollout_status(root)["phase"] == "succeeded"
    assert load.failures() == [], load.failures()[:5]

    # Roll back to version 1 with another rollout, kill it mid-ramp, then abort from "another shell".
    proc = tfsctl_bg(root, *start_args("hpt", "1", "10,50,100", "3s", "--min-requests", "0"))
    wait_weight(root, proc, 10, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    run = tfsctl(root, "rollout", "abort", "hpt")
    assert run.returncode == 0, run.stderr
    assert rollout_status(root)["phase"] == "aborted"
    assert not canary_running(root)
    states = json.loads(tfsctl(root, "status", "hpt", "-o", "json").stdout)
    assert all(
        v["version"] == 2
        for r in states["replicas"]
        for m in r["models"]
        for v in m["versions"]
        if v["state"] == "AVAILABLE"
    )


def test_canary_crash_rolls_back_with_stable_untouched(deployed) -> None:
    root, rest, grpc = deployed
    pids = stable_pids(root)
    with Load(rest, grpc) as load:
        wait_for(lambda: len(load.records) > 50, 30, "load to start")
        proc = tfsctl_bg(root, *start_args("hpt", "2", "10,25,50,100", "3s", "--min-requests", "10"))
        canary_file = root / ".tfso" / "deployments" / "hpt.canary.json"
        wait_weight(root, proc, 25, 2)
        os.killpg(json.loads(canary_file.read_text())["replicas"][0]["pid"], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    status = rollout_status(root)
    assert status["phase"] == "failed" and "crashed" in status["message"]
    assert stable_pids(root) == pids and not canary_running(root)
    stable_failures = [r for r in load.failures() if r[0] > status["updated_at"]]
    assert stable_failures == [], stable_failures[:5]


def test_bad_input_changes_nothing(deployed) -> None:
    root, _, _ = deployed
    cases = [
        (["rollout", "start", "nope", "--version", "2"], 2, "no such spec file"),
        (["rollout", "start", "hpt", "--version", "9"], 7, "has no version 9"),
        (["rollout", "start", "hpt", "--version", "1"], 7, "already serves version 1"),
        (["rollout", "start", "hpt", "--version", "2", "--max-error-rate", "2"], 7, "out of range"),
        (["rollout", "start", "hpt", "--version", "2", "--steps", "50,25"], 7, "rise strictly"),
        (
            ["rollout", "start", "hpt", "--version", "2", "--threshold", "0"],
            7,
            "--threshold must be",
        ),
        (
            ["rollout", "start", "hpt", "--version", "2", "--webhook", "later=http://x"],
            7,
            "KIND=URL",
        ),
        (["rollout", "status", "nope"], 7, "no rollout of 'nope'"),
        # Stable not pinned: with `latest` every replica would load the new version at once.
        (["rollout", "start", "floating", "--version", "2"], 7, "pin the stable version"),
    ]
    (root / "serving_configs" / "floating.yaml").write_text("base_path: ../models/hpt\nversion_policy: latest\n")
    before = (root / "serving_configs" / "hpt.yaml").read_text()
    for args, code, words in cases:
        run = tfsctl(root, *args)
        assert run.returncode == code, (args, run.stderr)
        assert words in run.stderr and "Traceback" not in run.stderr, (args, run.stderr)
    assert (root / "serving_configs" / "hpt.yaml").read_text() == before
    assert not canary_running(root) and not (root / ".tfso" / "rollouts" / "hpt.json").exists()


def test_pause_then_promote_from_the_cli(deployed) -> None:
    """`tfsctl rollout pause` holds the weight; `promote` from another shell skips the remaining
    steps; the controller that started it exits 0."""
    root, rest, grpc = deployed
    with Load(rest, grpc) as load:
        wait_for(lambda: len(load.records) > 50, 30, "load to start")
        proc = tfsctl_bg(root, *start_args("hpt", "2", "10,50,100", "10m", "--min-requests", "5"))
        wait_weight(root, proc, 10, 2)
        paused = tfsctl(root, "rollout", "pause", "hpt")
        assert paused.returncode == 0 and "paused" in paused.stdout, paused.stdout + paused.stderr
        status = rollout_status(root)
        assert (status["phase"], status["weight"]) == ("paused", 10)
        promoted = tfsctl(root, "rollout", "promote", "hpt")
        assert promoted.returncode == 0 and "succeeded" in promoted.stdout, promoted.stdout + promoted.stderr
        out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err
    assert load.failures() == [], load.failures()[:5]
    status = rollout_status(root)
    assert status["phase"] == "succeeded"
    assert [h["weight"] for h in status["history"] if h["decision"].startswith("weight")] == [10]
    assert [h["decision"] for h in status["history"] if "request" in h["reason"]] == ["paused", "resumed", "promote"]
    assert requests.post(f"{rest}/v1/models/hpt:predict", json={"instances": [[1.0]]},
                         timeout=5).json() == {"predictions": [[3.5]]}


def test_canary_rollout_script_exit_codes(deployed) -> None:
    """scripts/canary_rollout.sh for CI: 2 on bad usage, 1 rolled back, 0 promoted, and the
    report written either way."""
    root, rest, grpc = deployed
    script = str(Path(__file__).resolve().parents[3] / "scripts" / "canary_rollout.sh")
    env = {**os.environ, "COLUMNS": "200", "TFSCTL": str(Path(sys.executable).with_name("tfsctl"))}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", script, *args], cwd=root, capture_output=True, text=True,
                              timeout=300, env=env)

    usage = run("hpt")
    assert usage.returncode == 2 and "usage:" in usage.stderr
    with Load(rest, grpc) as load:
        wait_for(lambda: len(load.records) > 50, 30, "load to start")
        bad = run("hpt", "3", "--steps", "50,100", "--interval", "2s", "--min-requests", "5",
                  "--threshold", "1")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert (root / "rollout-hpt-v3.png").stat().st_size > 1000
        shutil.rmtree(root / ".tfso" / "rollouts")
        good = run("hpt", "2", "--steps", "100", "--interval", "2s", "--min-requests", "5")
        assert good.returncode == 0, good.stdout + good.stderr
        assert (root / "rollout-hpt-v2.png").stat().st_size > 1000
    assert rollout_status(root)["phase"] == "succeeded"
