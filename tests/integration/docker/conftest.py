"""Shared fixtures for the Docker runtime's integration tests (real dockerd, stand-in image).

`docker_api` makes sure a daemon answers (running scripts/setup_system.sh once when none does),
`standin` builds the stand-in image once (under a machine-wide lock), and every container a
test deployment of this checkout made (deployment names `docker_name(what)` = `t<id>_<what>`) or
a test created by hand (label `io.tfso.test` = this checkout's id) is removed at the start of the
run and at its end, whatever happened. Under pytest-xdist the start sweep runs once, in the first
worker that needs Docker, and the end sweep in the controller after every worker finished
(tests/conftest.py): a worker never removes the containers another worker's module is using, and
no run removes another checkout's. So a `t<id>_` deployment name is unique in the suite.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.runtime.docker import LABEL_DEPLOYMENT, LABEL_MANAGED_BY
from orchestrator.runtime.docker.api import DockerApi, DockerError
from tests.helpers.parallel import (
    CHECKOUT_ID,
    DOCKER_SWEEP,
    docker_name,
    machine_lock,
    once_per_run,
)
from tests.helpers.standin_image import (
    STANDIN_REPO,
    ensure_broken_image,
    ensure_standin_image,
    tfsctl_command,
)

ROOT = Path(__file__).resolve().parents[3]
TEST_LABEL = "io.tfso.test"  # on containers a test creates by hand; the value is CHECKOUT_ID
SWEPT_PREFIX = docker_name("")  # `t<id>_`: this checkout's test deployments


def _connect() -> DockerApi:
    api = DockerApi()
    api.version()
    return api


def sweep_targets(api: DockerApi) -> list[str]:
    """Ids of this checkout's test containers: its `t<id>_` deployments and hand-made ones."""
    ids = [c.id for c in api.list({LABEL_MANAGED_BY: "tfsctl"})
           if c.labels.get(LABEL_DEPLOYMENT, "").startswith(SWEPT_PREFIX)]
    return ids + [c.id for c in api.list({TEST_LABEL: CHECKOUT_ID}) if c.id not in ids]


def remove_test_containers(api: DockerApi) -> None:
    for container in sweep_targets(api):
        api.remove(container)


def sweep_test_containers() -> None:
    """Remove what earlier runs left behind (also called by tests/conftest.py at the end)."""
    api = _connect()
    try:
        remove_test_containers(api)
    finally:
        api.close()


@pytest.fixture(scope="session")
def docker_api(request: pytest.FixtureRequest) -> Iterator[DockerApi]:
    try:
        api = _connect()
    except DockerError:
        with machine_lock("setup-system"):
            subprocess.run(["bash", str(ROOT / "scripts" / "setup_system.sh")], check=False, timeout=900)
        api = _connect()  # a clear DockerUnavailable if it still does not answer
    once_per_run(request.config, DOCKER_SWEEP, lambda: remove_test_containers(api))
    yield api
    api.close()


@pytest.fixture(scope="session")
def standin(docker_api: DockerApi) -> str:
    return ensure_standin_image(docker_api)


@pytest.fixture(scope="session")
def broken_image(docker_api: DockerApi) -> str:
    return ensure_broken_image(docker_api)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, docker_api: DockerApi, standin: str) -> Iterator[Path]:
    """A project folder: models/hpt/{1,2} (half_plus_two, then half_plus_three) and specs."""
    from tests.helpers.models import half_plus_two_tf1

    root = tmp_path_factory.mktemp("docker-project")
    half_plus_two_tf1(root / "models" / "hpt" / "1")
    half_plus_two_tf1(root / "models" / "hpt" / "2", b=3.0)
    (root / "serving_configs").mkdir()
    yield root
    for state in (root / ".tfso" / "deployments").glob("*.json"):
        tfsctl(root, "stop", state.stem, timeout=120)


def tfsctl(workdir: Path, *args: str, timeout: float = 240,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*tfsctl_command(), *args], cwd=workdir,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def write_spec(root: Path, name: str, body: str, *, standin_image: bool = True) -> None:
    """A spec for the stand-in: its image (never pulled) and the host mounts it runs on."""
    text = body
    if standin_image:
        text += f"image: {STANDIN_REPO}\ntag: standin\npull: never\n"
    (root / "serving_configs" / f"{name}.yaml").write_text(text)
