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
from orchestrator.runtime.docker.api import DockerApi
from orchestrator.runtime.select import choose_runtime
from orchestrator.spec import load_spec
from tests.helpers.standin_image import HOST_MOUNTS_ENV, STANDIN_REPO, host_mounts
from tests.integration.docker.conftest import tfsctl, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.docker]


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
    write_spec(workdir, "t_nodaemon", "base_path: ../models/hpt\n" + ports())
    run = tfsctl(workdir, "deploy", "t_nodaemon", "--runtime", "docker",
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
    (workdir / "serving_configs" / "t_noimage.yaml").write_text(body)
    run = tfsctl(workdir, "deploy", "t_noimage", "--runtime", "docker", timeout=60)
    assert_clean_error(run, 4, f"image {STANDIN_REPO}:absent is not present",
                       f"docker pull {STANDIN_REPO}:absent", "pull policy is never")
    # The same through the flags.
    run = tfsctl(workdir, "deploy", "t_noimage", "--runtime", "docker", "--image",
                 f"{STANDIN_REPO}:other", "--pull", "never", timeout=60)
    assert_clean_error(run, 4, f"{STANDIN_REPO}:other is not present")
    assert no_containers_of(docker_api, "t_noimage")


def test_host_port_already_in_use(workdir: Path, docker_api: DockerApi) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        write_spec(workdir, "t_busy", f"base_path: ../models/hpt\nports: {{grpc: {free_port()}, rest: {port}}}\n")
        run = tfsctl(workdir, "deploy", "t_busy", "--runtime", "docker")
    assert_clean_error(run, 4, f"REST port {port}", "already in use", "fix:")
    assert no_containers_of(docker_api, "t_busy")


def test_missing_model_folder(workdir: Path, docker_api: DockerApi) -> None:
    write_spec(workdir, "t_nomodel", "base_path: ../models/nope\n" + ports())
    run = tfsctl(workdir, "deploy", "t_nomodel", "--runtime", "docker")
    assert_clean_error(run, 2, "base_path", "does not exist")
    # A folder to mount that is missing on the host: Docker's refusal, translated.
    write_spec(workdir, "t_nomount", "base_path: ../models/hpt\n" + ports()
               + f"image: {STANDIN_REPO}\ntag: standin\npull: never\n", standin_image=False)
    run = tfsctl(workdir, "deploy", "t_nomount", "--runtime", "docker",
                 env={HOST_MOUNTS_ENV: '[["/nonexistent/tfso", "/x"]]'})
    assert_clean_error(run, 4, "folder to mount is missing", "/nonexistent/tfso")
    assert no_containers_of(docker_api, "t_nomount")


def test_container_that_exits_at_start_shows_its_logs(workdir: Path, docker_api: DockerApi,
                                                      broken_image: str) -> None:
    write_spec(workdir, "t_exits", "base_path: ../models/hpt\n" + ports() + "health: {deadline_s: 60}\n"
               + f"image: {STANDIN_REPO}\ntag: broken\npull: never\n",
               standin_image=False)
    run = tfsctl(workdir, "deploy", "t_exits", "--runtime", "docker")
    # Exit code 4, not 5 (HealthTimeout): stopped by the exit, not by the 60 s deadline.
    assert_clean_error(run, 4, "before every wanted version was AVAILABLE", "last log lines",
                       "refusing to start: unknown flag --bogus_flag_for_tests")
    assert "keeps exiting" in run.stderr or "exited with code 1" in run.stderr, run.stderr
    assert no_containers_of(docker_api, "t_exits")


def test_health_deadline_carries_the_logs(workdir: Path, docker_api: DockerApi) -> None:
    write_spec(workdir, "t_slow", "base_path: ../models/hpt\n" + ports()
               + "health: {deadline_s: 0.5, poll_interval_s: 0.1}\n")
    run = tfsctl(workdir, "deploy", "t_slow", "--runtime", "docker")
    assert_clean_error(run, 5, "not AVAILABLE after 0.5 s", "health.deadline_s")
    assert no_containers_of(docker_api, "t_slow")


def test_gpu_deploy_without_a_gpu_runtime(workdir: Path, docker_api: DockerApi, standin: str) -> None:
    """The GPU is simulated: the stand-in is tagged `-gpu`; the real engine has no GPU runtime."""
    docker_api.tag_image(standin, f"{STANDIN_REPO}:standin-gpu")
    try:
        write_spec(workdir, "t_gpu", "base_path: ../models/hpt\n" + ports()
                   + "device: gpu\nreplicas: 2\n")
        run = tfsctl(workdir, "deploy", "t_gpu", "--runtime", "docker", timeout=60)
    finally:
        docker_api.remove_image(f"{STANDIN_REPO}:standin-gpu")
    assert_clean_error(run, 4, "cannot deploy t_gpu on GPU", "no GPU runtime",
                       f"{STANDIN_REPO}:standin-gpu", "nvidia-container-toolkit", "device: cpu")
    assert no_containers_of(docker_api, "t_gpu")


def test_auto_runtime_says_which_and_why(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                         standin: str) -> None:
    write_spec(workdir, "t_auto", "base_path: ../models/hpt\n" + ports())
    spec = load_spec("t_auto", configs_dir=workdir / "serving_configs")
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
    write_spec(workdir, "t_gpu2", "base_path: ../models/hpt\n" + ports() + "device: gpu\nreplicas: 2\n")
    spec = load_spec("t_gpu2", configs_dir=workdir / "serving_configs")
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
    assert no_containers_of(docker_api, "t_gpu2")
