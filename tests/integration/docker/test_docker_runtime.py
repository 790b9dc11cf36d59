"""The Docker runtime end to end through `tfsctl`: real dockerd, the stand-in image, loopback ports."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from orchestrator.health import check_ready
from orchestrator.runtime.base import free_port
from orchestrator.runtime.docker import LABEL_DEPLOYMENT, LABEL_MANAGED_BY, LABEL_REPLICA
from orchestrator.runtime.docker.api import ContainerRequest, DockerApi
from tests.helpers.parallel import CHECKOUT_ID, docker_name
from tests.integration.docker.conftest import TEST_LABEL, tfsctl, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.docker]
# Deployment names only this checkout uses (the run's sweep removes their leftovers).
MAIN = docker_name("main")
ROLL = docker_name("roll")
CRASH = docker_name("crash")
PUTBACK = docker_name("putback")


def wait_for(what: str, condition: Callable[[], bool], deadline_s: float = 90.0) -> float:
    """Poll until `condition()`; returns the seconds it took, fails naming `what` at the deadline."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > deadline_s:
            pytest.fail(f"gave up after {deadline_s:g} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def predict(rest: str, model: str, body: dict, suffix: str = "") -> dict:
    return requests.post(f"{rest}/v1/models/{model}{suffix}:predict", json=body, timeout=30).json()


def ours(api: DockerApi, name: str):
    return sorted(api.list({LABEL_MANAGED_BY: "tfsctl", LABEL_DEPLOYMENT: name}),
                  key=lambda c: int(c.labels[LABEL_REPLICA]))


def deploy(project: Path, name: str, *extra: str) -> dict:
    run = tfsctl(project, "deploy", name, "--runtime", "docker", "-o", "json", *extra)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_deploy_reload_replace_stop(project: Path, docker_api: DockerApi, standin: str) -> None:
    grpc, rest = free_port(), free_port()
    ports = f"ports: {{grpc: {grpc}, rest: {rest}}}\n"
    write_spec(project, MAIN, f"base_path: ../models/hpt\nversion_policy: {{specific: [1]}}\n{ports}")
    info = deploy(project, MAIN)
    assert info["action"] == "created" and info["rest_url"] == f"http://127.0.0.1:{rest}"
    url = info["rest_url"]
    assert predict(url, MAIN, {"instances": [1.0, 2.0, 5.0]}) == {"predictions": [2.5, 3.0, 4.5]}
    (container,) = ours(docker_api, MAIN)
    assert container.image == standin and container.running
    assert container.ports == {8500: ("127.0.0.1", grpc), 8501: ("127.0.0.1", rest)}

    # A foreign container, even one named and labelled like ours, is never touched.
    foreign = docker_api.create(ContainerRequest(
        image=standin, command=(), name=f"tfso-{MAIN}-9-foreign",
        labels={TEST_LABEL: CHECKOUT_ID, LABEL_DEPLOYMENT: MAIN, LABEL_REPLICA: "9"}))

    # The same spec again: nothing changes.
    again = deploy(project, MAIN)
    assert again["action"] == "unchanged" and again["replicas"][0]["id"] == container.id

    # New versions and a label on one not loaded yet: hot-reloaded, same container, same start.
    write_spec(project, MAIN, f"base_path: ../models/hpt\nversion_policy: all\n"
                                  f"version_labels: {{stable: 1, canary: 2}}\n{ports}")
    run = tfsctl(project, "reload", MAIN, "-o", "json")
    assert run.returncode == 0, run.stderr
    reloaded = json.loads(run.stdout)
    assert reloaded["action"] == "reloaded"
    now = docker_api.inspect(container.id)
    assert (now.id, now.started_at, now.restart_count) == (container.id, container.started_at, 0)
    assert predict(url, MAIN, {"instances": [1.0]}, "/versions/2") == {"predictions": [3.5]}
    assert predict(url, MAIN, {"instances": [1.0]}, "/labels/stable") == {"predictions": [2.5]}
    assert predict(url, MAIN, {"instances": [1.0]}, "/labels/canary") == {"predictions": [3.5]}
    config = project / ".tfso" / "deployments" / MAIN / "config" / "models.config"
    assert 'key: "canary"' in config.read_text()  # what a restart would load

    run = tfsctl(project, "status", MAIN, "-o", "json")
    assert run.returncode == 0, run.stderr
    states = {(m["model"], v["version"]): v["state"]
              for r in json.loads(run.stdout)["replicas"] for m in r["models"] for v in m["versions"]}
    assert states == {(MAIN, 1): "AVAILABLE", (MAIN, 2): "AVAILABLE"}
    ps = json.loads(tfsctl(project, "ps", MAIN, "-o", "json").stdout)["replicas"]
    assert [(r["replica"], r["id"], r["status"]) for r in ps] == [(0, container.id[:12], "running")]
    assert f"tfso-{MAIN}-0" in tfsctl(project, "ps", MAIN).stdout
    assert "Successfully loaded servable version" in tfsctl(project, "logs", MAIN).stdout

    # A changed container (resources, oneDNN) replaces the replica: new id, same ports, still
    # serving, and `onednn: false` is TF_ENABLE_ONEDNN_OPTS=0 in the server process's own
    # environment (PID 1: the entrypoint execs the server, as the official image's does).
    write_spec(project, MAIN, f"base_path: ../models/hpt\nversion_policy: all\n"
                                  f"version_labels: {{stable: 1}}\nresources: {{memory: 1g, cpus: 1}}\n"
                                  f"onednn: false\n{ports}")
    replaced = deploy(project, MAIN)
    assert replaced["action"] == "replaced" and "container changed" in replaced["note"]
    (new,) = ours(docker_api, MAIN)
    assert new.id != container.id and new.ports == container.ports
    assert predict(url, MAIN, {"instances": [1.0]}, "/labels/stable") == {"predictions": [2.5]}
    import docker

    environ = docker.from_env().containers.get(new.id).exec_run(["cat", "/proc/1/environ"]).output
    assert b"TF_ENABLE_ONEDNN_OPTS=0\x00" in environ and b"MODEL_NAME=" + MAIN.encode() in environ

    run = tfsctl(project, "stop", MAIN)
    assert run.returncode == 0, run.stderr
    assert ours(docker_api, MAIN) == []
    assert docker_api.inspect(foreign).name == f"tfso-{MAIN}-9-foreign"  # survived
    docker_api.remove(foreign)
    assert not (project / ".tfso" / "deployments" / f"{MAIN}.json").exists()


def test_rolling_replace_keeps_a_replica_serving_and_scale(project: Path, docker_api: DockerApi) -> None:
    grpc, rest = free_port(), free_port()
    body = f"base_path: ../models/hpt\nreplicas: 2\nports: {{grpc: {grpc}, rest: {rest}}}\n"
    write_spec(project, ROLL, body)
    info = deploy(project, ROLL)
    assert info["action"] == "created" and len(info["replicas"]) == 2
    urls = [f"http://127.0.0.1:{r['rest_port']}" for r in info["replicas"]]
    before = {c.id for c in ours(docker_api, ROLL)}

    ticks: list[tuple[bool, ...]] = []
    done = threading.Event()

    def watch() -> None:
        with requests.Session() as session:
            while not done.is_set():
                ticks.append(tuple(check_ready(u, {ROLL: [2]}, session=session).ready for u in urls))
                time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        write_spec(project, ROLL, body + "resources: {memory: 1g}\n")
        replaced = deploy(project, ROLL)
    finally:
        done.set()
        watcher.join(timeout=10)
    assert replaced["action"] == "replaced"
    after = ours(docker_api, ROLL)
    assert len(after) == 2 and not before & {c.id for c in after}
    assert [f"http://127.0.0.1:{c.ports[8501][1]}" for c in after] == urls  # same host ports
    assert ticks and all(any(t) for t in ticks), "no replica served at some point of the rollout"
    assert any(not all(t) for t in ticks)  # each was down in turn: it really was replaced

    run = tfsctl(project, "scale", ROLL, "3", "-o", "json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["action"] == "scaled"
    three = ours(docker_api, ROLL)
    assert [c.labels[LABEL_REPLICA] for c in three] == ["0", "1", "2"]
    assert {c.id for c in after} <= {c.id for c in three}  # the others untouched
    assert check_ready(f"http://127.0.0.1:{three[2].ports[8501][1]}", {ROLL: [2]}).ready
    run = tfsctl(project, "scale", ROLL, "1", "-o", "json")
    assert run.returncode == 0, run.stderr
    assert [c.id for c in ours(docker_api, ROLL)] == [three[0].id]
    assert tfsctl(project, "stop", ROLL).returncode == 0


def test_crash_is_restarted_by_policy_and_docker_kill_by_deploy(project: Path, docker_api: DockerApi) -> None:
    grpc, rest = free_port(), free_port()
    write_spec(project, CRASH, f"base_path: ../models/hpt\nports: {{grpc: {grpc}, rest: {rest}}}\n")
    deploy(project, CRASH)
    url = f"http://127.0.0.1:{rest}"
    (container,) = ours(docker_api, CRASH)

    # A crash (the main process killed from outside, as the OOM killer would): Docker restarts it.
    os.kill(container.pid, signal.SIGKILL)
    wait_for("the container to exit", lambda: docker_api.inspect(container.id).restart_count >= 1
             or not check_ready(url, {CRASH: [2]}).ready, deadline_s=30)
    took = wait_for("AVAILABLE after the restart",
                    lambda: docker_api.inspect(container.id).restart_count >= 1
                    and check_ready(url, {CRASH: [2]}).ready, deadline_s=120)
    print(f"\nrestart after a crash: AVAILABLE again {took:.1f} s later")
    assert docker_api.inspect(container.id).id == container.id

    # `docker kill` counts as a manual stop: Docker does not restart it, status says so,
    # and deploy (idempotent) starts a new replica on the same ports.
    docker_api.kill(container.id)
    wait_for("docker kill to stop it", lambda: not docker_api.inspect(container.id).running, deadline_s=30)
    status = tfsctl(project, "status", CRASH)
    assert status.returncode == 1 and "EXITED" in status.stdout and "137" in status.stdout
    start = time.monotonic()
    again = deploy(project, CRASH)
    print(f"replica after `docker kill`: AVAILABLE again via deploy in {time.monotonic() - start:.1f} s")
    assert again["action"] == "replaced" and "exited with code 137" in again["note"]
    assert check_ready(url, {CRASH: [2]}).ready

    # Removed behind our back: status says so, deploy creates it again.
    (gone,) = ours(docker_api, CRASH)
    docker_api.remove(gone.id)
    status = tfsctl(project, "status", CRASH)
    assert status.returncode == 1 and "container is gone" in status.stdout
    recreated = deploy(project, CRASH)
    assert recreated["action"] == "created" and "created again" in recreated["note"]
    assert check_ready(url, {CRASH: [2]}).ready
    assert tfsctl(project, "stop", CRASH).returncode == 0


def test_version_failing_in_the_loader_puts_the_previous_config_back(project: Path,
                                                                     docker_api: DockerApi) -> None:
    """A version that passes every pre-check and fails in TensorFlow's loader: the reload fails
    with a runtime error, `_restore_config` puts the old models.config back in the mounted
    folder, and the same container serves the old config again (its label is the witness: the
    new config drops it, and version 1 alone would survive a failed load either way)."""
    from tests.helpers.models import half_plus_two_tf1, half_plus_two_unloadable

    base = project / "models" / "putback"
    half_plus_two_tf1(base / "1")
    half_plus_two_unloadable(base / "3")
    grpc, rest = free_port(), free_port()
    old_spec = (f"base_path: ../models/putback\nversion_policy: {{specific: [1]}}\n"
                f"version_labels: {{stable: 1}}\nports: {{grpc: {grpc}, rest: {rest}}}\n"
                "health: {deadline_s: 60}\n")
    write_spec(project, PUTBACK, old_spec)
    info = deploy(project, PUTBACK)
    (container,) = ours(docker_api, PUTBACK)
    config = project / ".tfso" / "deployments" / PUTBACK / "config" / "models.config"
    old_config = config.read_text()

    write_spec(project, PUTBACK, old_spec.replace("specific: [1]", "specific: [3]")
                                             .replace("version_labels: {stable: 1}\n", ""))
    run = tfsctl(project, "reload", PUTBACK)
    assert run.returncode == 4, (run.returncode, run.stderr)  # past the pre-checks (those exit 3)
    assert "failed to load" in run.stderr and "Traceback" not in run.stderr

    assert config.read_text() == old_config
    now = docker_api.inspect(container.id)
    assert (now.id, now.started_at, now.restart_count) == (container.id, container.started_at, 0)
    url = info["rest_url"]
    assert predict(url, PUTBACK, {"instances": [1.0]}) == {"predictions": [2.5]}
    assert predict(url, PUTBACK, {"instances": [1.0]}, "/labels/stable") == {"predictions": [2.5]}
    write_spec(project, PUTBACK, old_spec)
    assert deploy(project, PUTBACK)["action"] == "unchanged"
    assert tfsctl(project, "stop", PUTBACK).returncode == 0
