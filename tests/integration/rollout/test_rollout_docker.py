"""Canary rollouts on the Docker runtime: real dockerd, HAProxy in a container, real load.

The same acceptance as `test_rollout_local.py`, through the same code paths: `tfsctl deploy`
with `router: true` runs the replicas (stand-in `tensorflow/serving` image) on free
127.0.0.1-published ports and the router container (stand-in `haproxy` image, host network)
on the spec's ports; `tfsctl rollout` adds canary containers and moves weights through the
router's runtime API. No registry: both images are built locally, pull policy `never`.

One deployment serves the whole module (its containers start once); before each test it is
put back on version 1 by `tfsctl deploy`, which hot-reloads it (no container restarts).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from orchestrator.router.haproxy import GRPC_BACKEND, REST_BACKEND, RuntimeApi
from orchestrator.runtime.base import free_port
from orchestrator.runtime.docker import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    LABEL_REPLICA,
    LABEL_ROLE,
)
from orchestrator.runtime.docker.api import ContainerInfo, DockerApi, DockerError
from tests.helpers.parallel import docker_name
from tests.helpers.requires import require_haproxy
from tests.helpers.rollout import (
    P99_THRESHOLD_MS,
    Load,
    build_models,
    canary_share,
    rollout_file,
    rollout_status,
    start_args,
    tfsctl,
    tfsctl_bg,
    wait_for,
    wait_weight,
    weight_holds,
)
from tests.helpers.standin_image import (
    ROUTER_REF,
    STANDIN_REF,
    ensure_router_image,
    ensure_standin_image,
)

# Not kind `t`: the Docker suite's sweep may start while this module's containers run. The name
# carries this checkout's id, so another checkout on the same dockerd never touches them.
NAME = docker_name("hpt", "rd")

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture(autouse=True, scope="module")
def _needs_haproxy() -> None:
    require_haproxy()  # fails under CI, skips with what to install elsewhere


def ours(api: DockerApi, role: str | None = "replica") -> list[ContainerInfo]:
    """Our deployment's containers: replicas (by index), `router`, `canary`, or all (None)."""
    found = [c for c in api.list({LABEL_MANAGED_BY: "tfsctl", LABEL_DEPLOYMENT: NAME})
             if c.labels.get(LABEL_DEPLOYMENT) == NAME]
    if role == "replica":
        found = [c for c in found if LABEL_REPLICA in c.labels]
    elif role is not None:
        found = [c for c in found if c.labels.get(LABEL_ROLE) == role]
    return sorted(found, key=lambda c: (c.labels.get(LABEL_REPLICA, ""), c.name))


def stable_identity(api: DockerApi) -> list[tuple[str, str, int]]:
    """Id, start time and restarts of every stable container: equal = untouched."""
    return [(c.id, c.started_at, c.restart_count) for c in ours(api)]


def remove_ours(api: DockerApi) -> None:
    for c in ours(api, role=None):
        try:
            api.remove(c.id)
        except DockerError:
            pass


def router_weights(root: Path) -> dict[str, tuple[int, str]]:
    """server -> (weight, status) in both backends, read from the router's admin socket."""
    api = RuntimeApi(str(root / ".tfso" / "deployments" / NAME / "router" / "admin.sock"))
    return {f"{r['pxname']}/{r['svname']}": (int(r["weight"] or 0), r["status"]) for r in api.stats()
            if r["pxname"] in (REST_BACKEND, GRPC_BACKEND) and r["svname"] not in ("BACKEND", "FRONTEND")}


def assert_nothing_left(root: Path, api: DockerApi) -> None:
    """No canary container, no canary state, canary slots at weight 0 in maintenance."""
    assert ours(api, "canary") == []
    assert not (root / ".tfso" / "deployments" / f"{NAME}.canary.json").exists()
    weights = router_weights(root)
    assert all(w == (0, "MAINT") for k, w in weights.items() if "/canary" in k), weights
    assert all(w[0] == 1 and w[1].startswith("UP") for k, w in weights.items() if "/stable" in k), weights


def serving_versions(root: Path) -> set[int]:
    states = json.loads(tfsctl(root, "status", NAME, "-o", "json").stdout)
    return {v["version"] for r in states["replicas"] for m in r["models"] for v in m["versions"]
            if v["state"] == "AVAILABLE"}


@pytest.fixture(scope="module")
def docker_api() -> Iterator[DockerApi]:
    root = Path(__file__).resolve().parents[3]
    try:
        api = DockerApi()
        api.version()
    except DockerError:
        subprocess.run(["bash", str(root / "scripts" / "setup_system.sh")], check=False, timeout=900)
        api = DockerApi()
        api.version()  # a clear DockerUnavailable if it still does not answer
    remove_ours(api)
    yield api
    remove_ours(api)
    api.close()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory,
             docker_api: DockerApi) -> Iterator[tuple[Path, str, str, str]]:
    ensure_standin_image(docker_api)
    ensure_router_image(docker_api)
    root = tmp_path_factory.mktemp("rollout-docker")
    build_models(root / "models" / NAME)
    (root / "serving_configs").mkdir()
    grpc, rest = free_port(), free_port()
    while rest == grpc:
        rest = free_port()
    spec = (f"base_path: ../models/{NAME}\nversion_policy: {{specific: [1]}}\nversion_labels: {{stable: 1}}\n"
            f"router: true\nreplicas: 2\nports: {{grpc: {grpc}, rest: {rest}}}\n"
            f"image: {STANDIN_REF.split(':')[0]}\ntag: {STANDIN_REF.split(':')[1]}\npull: never\n"
            f"router_image: {ROUTER_REF}\n")
    (root / "serving_configs" / f"{NAME}.yaml").write_text(spec)
    run = tfsctl(root, "deploy", NAME, "--runtime", "docker")
    assert run.returncode == 0, run.stdout + run.stderr
    try:
        yield root, f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc}", spec
    finally:
        tfsctl(root, "rollout", "abort", NAME, timeout=120)
        tfsctl(root, "stop", NAME, timeout=120)


@pytest.fixture
def fresh(deployed, docker_api: DockerApi) -> Iterator[tuple[Path, str, str]]:
    """The deployment on version 1 (hot-reloaded back if a test promoted), no rollout record."""
    root, rest, grpc, spec = deployed
    (root / "serving_configs" / f"{NAME}.yaml").write_text(spec)
    run = tfsctl(root, "deploy", NAME, "--runtime", "docker")
    assert run.returncode == 0, run.stdout + run.stderr
    shutil.rmtree(root / ".tfso" / "rollouts", ignore_errors=True)
    assert serving_versions(root) == {1}
    yield root, rest, grpc
    tfsctl(root, "rollout", "abort", NAME, timeout=120)


def test_good_canary_ramps_with_zero_failed_requests_then_promotes(fresh, docker_api: DockerApi) -> None:
    root, rest, grpc = fresh
    before = stable_identity(docker_api)
    (router,) = ours(docker_api, "router")
    with Load(rest, grpc, model=NAME) as load:
        wait_for(lambda: len(load.records) > 50, 30, "load to start")
        run = tfsctl(root, *start_args(NAME, "2", "10,50,100", "4s", "--min-requests", "20"))
        # Requests keep flowing after promotion, through the router: wait for 100 more.
        after_run = len(load.records)
        wait_for(lambda: len(load.records) > after_run + 100, 30, "requests after promotion")
    assert run.returncode == 0, run.stdout + run.stderr
    assert load.failures() == [], load.failures()[:5]
    assert {api for _, api, _, _ in load.records} == {"rest", "grpc"}

    status = rollout_status(root, NAME)
    assert status["phase"] == "succeeded"
    holds = weight_holds(status)
    assert [w for _, _, w in holds] == [10, 50, 100]  # two partial weights, then all
    for start, end, weight in holds:
        share, n = canary_share(load.records, start, end)
        # The controller holds each weight until --min-requests (20) reached the canary, so n does
        # not depend on the machine's speed; round robin is exact, one request of slack per window.
        assert n >= 20, n
        assert abs(share - weight) <= 5 + 100 / n, (weight, share, n)
    # Every replica serves version 2 only, the label moved with it, the spec says so.
    assert serving_versions(root) == {2}
    answers = {requests.post(f"{rest}/v1/models/{NAME}:predict", json={"instances": [[1.0]]},
                             timeout=5).json()["predictions"][0][0] for _ in range(20)}
    assert answers == {3.5}
    labelled = requests.post(f"{rest}/v1/models/{NAME}/labels/stable:predict",
                             json={"instances": [[1.0]]}, timeout=5)
    assert labelled.json() == {"predictions": [[3.5]]}
    assert "specific: [2]" in (root / "serving_configs" / f"{NAME}.yaml").read_text()
    # Promotion was a hot reload: same stable containers, same router container (no reload).
    assert stable_identity(docker_api) == before
    assert [c.id for c in ours(docker_api, "router")] == [router.id]
    assert_nothing_left(root, docker_api)


@pytest.mark.parametrize(  # a longer window for the slow canary: see the local suite's test
    ("version", "interval", "extra", "why"),
    [("3", "3s", [], "error rate"),
     ("4", "6s", ["--max-latency-p99-ms", str(P99_THRESHOLD_MS)], "p99")],
)  # fmt: skip
def test_bad_canary_rolls_back_and_stable_never_fails(
    fresh, docker_api: DockerApi, version: str, interval: str, extra: list[str], why: str
) -> None:
    root, rest, grpc = fresh
    before = stable_identity(docker_api)
    with Load(rest, grpc, model=NAME) as load:
        wait_for(lambda: len(load.records) > 50, 30, "load to start")
        run = tfsctl(root, *start_args(NAME, version, "25,50,100", interval, "--min-requests",
                                       "10", "--threshold", "2", *extra))
    assert run.returncode == 1, run.stdout + run.stderr
    status = rollout_status(root, NAME)
    assert status["phase"] == "failed" and why in status["message"], status["message"]
    checks = [h for h in status["history"] if h["decision"] in ("check failed", "roll back")]
    assert len(checks) == 2, "rolled back after exactly `threshold` failed intervals"
    assert [h["weight"] for h in status["history"] if h["decision"].startswith("weight")] == [25]
    # Stable never failed: every failure is the canary's own error.
    assert all("canary_bad" in r[3] for r in load.failures()), load.failures()[:5]
    assert stable_identity(docker_api) == before
    assert_nothing_left(root, docker_api)
    assert requests.post(f"{rest}/v1/models/{NAME}:predict", json={"instances": [[1.0]]},
                         timeout=5).json() == {"predictions": [[2.5]]}


def test_killed_controller_resume_and_abort(fresh, docker_api: DockerApi) -> None:
    root, rest, grpc = fresh
    with Load(rest, grpc, model=NAME) as load:
        wait_for(lambda: len(load.records) > 50, 30, "load to start")
        proc = tfsctl_bg(root, *start_args(NAME, "2", "10,25,100", "3s", "--min-requests", "10"))
        wait_weight(root, proc, 25, 2, name=NAME)
        proc.kill()
        proc.wait(timeout=10)
        status = rollout_status(root, NAME)
        assert status["phase"] == "progressing" and status["weight"] >= 25
        assert status["controller_running"] is False
        shown = tfsctl(root, "rollout", "status", NAME)
        assert "progressing" in shown.stdout and "not running" in shown.stdout
        assert len(ours(docker_api, "canary")) == 1, "the canary keeps serving meanwhile"
        again = tfsctl(root, "rollout", "start", NAME, "--version", "2")
        assert again.returncode == 7 and "already progressing" in again.stderr
        run = tfsctl(root, "rollout", "resume", NAME)
        assert run.returncode == 0, run.stdout + run.stderr
    assert rollout_status(root, NAME)["phase"] == "succeeded"
    assert load.failures() == [], load.failures()[:5]
    assert serving_versions(root) == {2}

    # Back to version 1 with another rollout; kill it mid-ramp, then abort from "another shell".
    proc = tfsctl_bg(root, *start_args(NAME, "1", "10,50,100", "3s", "--min-requests", "0"))
    wait_weight(root, proc, 10, 1, name=NAME)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    run = tfsctl(root, "rollout", "abort", NAME)
    assert run.returncode == 0, run.stdout + run.stderr
    assert rollout_status(root, NAME)["phase"] == "aborted"
    assert_nothing_left(root, docker_api)
    assert serving_versions(root) == {2}


def test_canary_crash_rolls_back_with_stable_untouched(fresh, docker_api: DockerApi) -> None:
    root, rest, grpc = fresh
    before = stable_identity(docker_api)
    with Load(rest, grpc, model=NAME) as load:
        wait_for(lambda: len(load.records) > 50, 30, "load to start")
        proc = tfsctl_bg(root, *start_args(NAME, "2", "10,25,50,100", "3s", "--min-requests", "10"))
        wait_weight(root, proc, 25, 2, name=NAME)
        (canary,) = ours(docker_api, "canary")
        docker_api.kill(canary.id)  # SIGKILL: the canary's server dies as in a crash
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    status = rollout_status(root, NAME)
    assert status["phase"] == "failed" and "crashed" in status["message"]
    assert stable_identity(docker_api) == before
    assert_nothing_left(root, docker_api)
    stable_failures = [r for r in load.failures() if r[0] > status["updated_at"]]
    assert stable_failures == [], stable_failures[:5]


def test_bad_input_changes_nothing(fresh, docker_api: DockerApi) -> None:
    root, _, _ = fresh
    before = stable_identity(docker_api)
    cases = [
        (["rollout", "start", "nope", "--version", "2"], 2, "no such spec file"),
        (["rollout", "start", NAME, "--version", "9"], 7, "has no version 9"),
        (["rollout", "start", NAME, "--version", "1"], 7, "already serves version 1"),
        (["rollout", "start", NAME, "--version", "2", "--max-error-rate", "2"], 7, "out of range"),
        (["rollout", "start", NAME, "--version", "2", "--steps", "50,25"], 7, "rise strictly"),
        (["rollout", "start", NAME, "--version", "2", "--threshold", "0"], 7, "--threshold must be"),
        (["rollout", "start", NAME, "--version", "2", "--canary-replicas", "9"], 7, "--canary-replicas must be"),
        (["rollout", "start", NAME, "--version", "2", "--webhook", "later=http://x"], 7, "KIND=URL"),
        (["rollout", "status", "nope"], 7, "no rollout of 'nope'"),
    ]
    spec = (root / "serving_configs" / f"{NAME}.yaml").read_text()
    for args, code, words in cases:
        run = tfsctl(root, *args)
        assert run.returncode == code, (args, run.stderr)
        assert words in run.stderr and "Traceback" not in run.stderr, (args, run.stderr)
    assert (root / "serving_configs" / f"{NAME}.yaml").read_text() == spec
    assert not rollout_file(root, NAME).exists()
    assert stable_identity(docker_api) == before
    assert_nothing_left(root, docker_api)


def test_stop_removes_router_and_canary_only_ours(fresh, docker_api: DockerApi) -> None:
    """Last: `tfsctl stop` mid-rollout removes router, canary and replicas, and nothing else."""
    from orchestrator.runtime.base import port_in_use
    from orchestrator.runtime.docker.api import ContainerRequest

    root, rest, grpc = fresh
    decoy = docker_api.create(ContainerRequest(
        image=ROUTER_REF, command=("true",), name=f"tfso-test-decoy-{free_port()}",
        labels={LABEL_MANAGED_BY: "tfsctl", LABEL_DEPLOYMENT: f"{NAME}_other", LABEL_ROLE: "router"}))
    try:
        proc = tfsctl_bg(root, *start_args(NAME, "2", "10,50,100", "3s", "--min-requests", "0"))
        wait_weight(root, proc, 10, 2, name=NAME)
        proc.kill()
        proc.wait(timeout=10)
        assert {c.labels.get(LABEL_ROLE) for c in ours(docker_api, role=None)} == {None, "router", "canary"}
        run = tfsctl(root, "stop", NAME)
        assert run.returncode == 0, run.stdout + run.stderr
        assert ours(docker_api, role=None) == []
        assert docker_api.inspect(decoy).labels[LABEL_DEPLOYMENT] == f"{NAME}_other"
        port = int(rest.rsplit(":", 1)[1])
        assert not port_in_use("127.0.0.1", port) and not port_in_use("127.0.0.1", int(grpc.rsplit(":", 1)[1]))
    finally:
        docker_api.remove(decoy)
