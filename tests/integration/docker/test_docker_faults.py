"""Bad input and faults against the real dockerd: each fails fast, clearly, and leaves nothing behind.

The GPU case is the one simulated part: this engine has no GPU runtime, so a `device: gpu`
deploy reaches the real daemon and must be refused with what to install (the exact request
is pinned by tests/unit/runtime/test_docker_request.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from orchestrator.runtime.base import free_port
from orchestrator.runtime.docker import LABEL_DEPLOYMENT, LABEL_MANAGED_BY
from orchestrator.runtime.docker.api import DockerApi, DockerError
from orchestrator.runtime.select import choose_runtime
from orchestrator.spec import load_spec
from tests.helpers.parallel import docker_name
from tests.helpers.standin_image import HOST_MOUNTS_ENV, STANDIN_REPO, host_mounts
from tests.integration.docker.conftest import tfsctl, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.docker]
# Deployment names only this checkout uses (the run's sweep removes their leftovers).
NODAEMON = docker_name("nodaemon")
NOIMAGE = docker_name("noimage")
BUSY = docker_name("busy")
NOMODEL = docker_name("nomodel")
NOMOUNT = docker_name("nomount")
EXITS = docker_name("exits")
SLOW = docker_name("slow")
GPU = docker_name("gpu")
AUTO = docker_name("auto")
GPU2 = docker_name("gpu2")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, docker_api: DockerApi, standin: str) -> Path:
    """Fault tests need no real model: a version folder the preflight accepts is enough."""
    from tests.helpers.models import half_plus_two_tf1

    root = tmp_path_factory.mktemp("docker-faults")
    half_plus_two_tf1(root / "models" / "hpt" / "1")
    (root / "serving_configs").mkdir()
    return root


def ports() -> str:
    return f"ports: {{grpc: {free_port()}, rest: {free_port()}}}\n"


def no_containers_of(api: DockerApi, name: str) -> bool:
    return api.list({LABEL_MANAGED_BY: "tfsctl", LABEL_DEPLOYMENT: name}) == []


def assert_clean_error(run: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    assert "error:" in run.stderr and "Traceback" not in run.stderr, run.stderr
    for needle in needles:
        assert needle in run.stderr, f"{needle!r} not in {run.stderr}"


def test_no_daemon_is_a_clear_error(workdir: Path) -> None:
    write_spec(workdir, NODAEMON, "base_path: ../models/hpt\n" + ports())
    run = tfsctl(workdir, "deploy", NODAEMON, "--runtime", "docker",
                 env={"DOCKER_HOST": f"unix://{workdir}/no-daemon.sock"}, timeout=60)  # no hang
    assert_clean_error(run, 4, "no Docker daemon answers", "no-daemon.sock", "fix:")


def test_socket_not_permitted_is_a_clear_error() -> None:
    """As an unprivileged user (not in the docker group), the socket refuses us."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    import docker  # noqa: F401  (imported before dropping privileges: nothing to read later)

    from orchestrator.runtime.docker.api import DockerUnavailable

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody and try
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                DockerApi(base_url="unix:///var/run/docker.sock").version()
                message = "connected"
            except DockerUnavailable as exc:
                message = str(exc)
            except BaseException as exc:
                message = f"unexpected {type(exc).__name__}: {exc}"
            os.write(write, message.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    assert "permission denied" in message and "docker group" in message, message


def test_missing_image_with_pull_never(workdir: Path, docker_api: DockerApi) -> None:
    body = "base_path: ../models/hpt\n" + ports() + f"image: {STANDIN_REPO}\ntag: absent\npull: never\n"
    (workdir / "serving_configs" / f"{NOIMAGE}.yaml").write_text(body)
    run = tfsctl(workdir, "deploy", NOIMAGE, "--runtime", "docker", timeout=60)
    assert_clean_error(run, 4, f"image {STANDIN_REPO}:absent is not present",
                       f"docker pull {STANDIN_REPO}:absent", "pull policy is never")
    # The same through the flags.
    run = tfsctl(workdir, "deploy", NOIMAGE, "--runtime", "docker", "--image",
                 f"{STANDIN_REPO}:other", "--pull", "never", timeout=60)
    assert_clean_error(run, 4, f"{STANDIN_REPO}:other is not present")
    assert no_containers_of(docker_api, NOIMAGE)


def test_host_port_already_in_use(workdir: Path, docker_api: DockerApi) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        write_spec(workdir, BUSY, f"base_path: ../models/hpt\nports: {{grpc: {free_port()}, rest: {port}}}\n")
        run = tfsctl(workdir, "deploy", BUSY, "--runtime", "docker")
    assert_clean_error(run, 4, f"REST port {port}", "already in use", "fix:")
    assert no_containers_of(docker_api, BUSY)


def test_missing_model_folder(workdir: Path, docker_api: DockerApi) -> None:
    write_spec(workdir, NOMODEL, "base_path: ../models/nope\n" + ports())
    run = tfsctl(workdir, "deploy", NOMODEL, "--runtime", "docker")
    assert_clean_error(run, 2, "base_path", "does not exist")
    # A folder to mount that is missing on the host: Docker's refusal, translated.
    write_spec(workdir, NOMOUNT, "base_path: ../models/hpt\n" + ports()
               + f"image: {STANDIN_REPO}\ntag: standin\npull: never\n", standin_image=False)
    run = tfsctl(workdir, "deploy", NOMOUNT, "--runtime", "docker",
                 env={HOST_MOUNTS_ENV: '[["/nonexistent/tfso", "/x"]]'})
    assert_clean_error(run, 4, "folder to mount is missing", "/nonexistent/tfso")
    assert no_containers_of(docker_api, NOMOUNT)


def test_container_that_exits_at_start_shows_its_logs(workdir: Path, docker_api: DockerApi,
                                                      broken_image: str) -> None:
    write_spec(workdir, EXITS, "base_path: ../models/hpt\n" + ports() + "health: {deadline_s: 60}\n"
               + f"image: {STANDIN_REPO}\ntag: broken\npull: never\n",
               standin_image=False)
    run = tfsctl(workdir, "deploy", EXITS, "--runtime", "docker")
    # Exit code 4, not 5 (HealthTimeout): stopped by the exit, not by the 60 s deadline.
    assert_clean_error(run, 4, "before every wanted version was AVAILABLE", "last log lines",
                       "refusing to start: unknown flag --bogus_flag_for_tests")
    assert "keeps exiting" in run.stderr or "exited with code 1" in run.stderr, run.stderr
    assert no_containers_of(docker_api, EXITS)


def test_health_deadline_carries_the_logs(workdir: Path, docker_api: DockerApi) -> None:
    write_spec(workdir, SLOW, "base_path: ../models/hpt\n" + ports()
               + "health: {deadline_s: 0.5, poll_interval_s: 0.1}\n")
    run = tfsctl(workdir, "deploy", SLOW, "--runtime", "docker")
    assert_clean_error(run, 5, "not AVAILABLE after 0.5 s", "health.deadline_s")
    assert no_containers_of(docker_api, SLOW)


def test_gpu_deploy_without_a_gpu_runtime(workdir: Path, docker_api: DockerApi, standin: str) -> None:
    """The GPU is simulated: the stand-in is tagged `-gpu`; the real engine has no GPU runtime."""
    docker_api.tag_image(standin, f"{STANDIN_REPO}:standin-gpu")
    try:
        write_spec(workdir, GPU, "base_path: ../models/hpt\n" + ports()
                   + "device: gpu\nreplicas: 2\n")
        run = tfsctl(workdir, "deploy", GPU, "--runtime", "docker", timeout=60)
    finally:
        docker_api.remove_image(f"{STANDIN_REPO}:standin-gpu")
    assert_clean_error(run, 4, f"cannot deploy {GPU} on GPU", "no GPU runtime",
                       f"{STANDIN_REPO}:standin-gpu", "nvidia-container-toolkit", "device: cpu")
    assert no_containers_of(docker_api, GPU)


def test_auto_runtime_says_which_and_why(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                         standin: str) -> None:
    write_spec(workdir, AUTO, "base_path: ../models/hpt\n" + ports())
    spec = load_spec(AUTO, configs_dir=workdir / "serving_configs")
    runtime, why = choose_runtime(spec, None)
    assert runtime.name == "docker" and f"image {standin} is present" in why, why

    absent = spec.model_copy(update={"tag": "absent"})
    runtime, why = choose_runtime(absent, None)
    assert runtime.name == "local" and "is not present" in why and "docker pull" in why, why

    monkeypatch.setenv("DOCKER_HOST", f"unix://{workdir}/no-daemon.sock")
    runtime, why = choose_runtime(spec, None)
    assert runtime.name == "local" and "no Docker daemon answers" in why, why


def test_gpu_request_as_the_engine_received_it(workdir: Path, docker_api: DockerApi, standin: str,
                                               tmp_path: Path) -> None:
    """What dockerd stored for the GPU container (read back before its start fails): the GPU is
    the only simulated part (a `-gpu` tag on the stand-in; no GPU runtime on this engine)."""
    from orchestrator.runtime.docker import DockerRuntime, GpuUnavailable
    from orchestrator.state import StateStore

    class Recording(DockerApi):
        def __init__(self) -> None:
            super().__init__()
            self.created: list[dict] = []

        def start(self, container: str, *, name: str = "") -> None:
            self.created.append(self._client.inspect_container(container))
            super().start(container, name=name)

    docker_api.tag_image(standin, f"{STANDIN_REPO}:standin-gpu")
    write_spec(workdir, GPU2, "base_path: ../models/hpt\n" + ports() + "device: gpu\nreplicas: 2\n")
    spec = load_spec(GPU2, configs_dir=workdir / "serving_configs")
    api = Recording()
    try:
        with pytest.raises(GpuUnavailable):
            DockerRuntime(StateStore(tmp_path / "state"), api=api, host_mounts=host_mounts()).deploy([spec])
    finally:
        docker_api.remove_image(f"{STANDIN_REPO}:standin-gpu")
        api.close()
    (raw,) = api.created
    assert raw["Config"]["Image"] == f"{STANDIN_REPO}:standin-gpu"
    assert raw["HostConfig"]["DeviceRequests"] == [
        {"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}]
    assert "--per_process_gpu_memory_fraction=0.45" in raw["Config"]["Cmd"]  # two replicas share
    assert no_containers_of(docker_api, GPU2)


def test_the_sweep_takes_only_this_checkouts_containers(docker_api: DockerApi, standin: str) -> None:
    """Two checkouts share one dockerd: the run's sweep must list this checkout's test containers
    (its `t<id>_` deployments, its hand-made ones) and nothing of another checkout's, old `t_`
    names included. Asked of `sweep_targets` (the sweep's own selection), not of the sweep
    itself, which would also remove this run's containers in use on other workers."""
    import secrets

    from orchestrator.runtime.docker.api import ContainerRequest
    from tests.helpers.parallel import CHECKOUT_ID
    from tests.integration.docker.conftest import TEST_LABEL, sweep_targets

    other_id = format((int(CHECKOUT_ID, 16) + 16**4) % 16**8, "08x")  # another checkout's id
    assert other_id[:4] != CHECKOUT_ID[:4]  # names carry the first four digits
    tag = secrets.token_hex(3)
    labels = {
        "ours": {LABEL_MANAGED_BY: "tfsctl", LABEL_DEPLOYMENT: docker_name("sweep")},
        "ours_by_hand": {TEST_LABEL: CHECKOUT_ID},
        "other": {LABEL_MANAGED_BY: "tfsctl", LABEL_DEPLOYMENT: f"t{other_id[:4]}_sweep"},
        "other_old_name": {LABEL_MANAGED_BY: "tfsctl", LABEL_DEPLOYMENT: "t_sweep"},
        "other_by_hand": {TEST_LABEL: other_id},
    }
    made: dict[str, str] = {}
    try:
        for what, labelled in labels.items():
            made[what] = docker_api.create(ContainerRequest(
                image=standin, command=(), name=f"tfso-sweep-{what}-{tag}", labels=labelled))
        targets = set(sweep_targets(docker_api))
        assert {made["ours"], made["ours_by_hand"]} <= targets
        assert not {made["other"], made["other_old_name"], made["other_by_hand"]} & targets
    finally:
        for container in made.values():
            try:
                docker_api.remove(container)
            except DockerError:  # an older checkout's own sweep took its `t_` one first
                pass
