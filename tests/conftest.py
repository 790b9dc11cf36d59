"""The whole suite runs in parallel: `make test` is `pytest -n N --dist loadfile` (pytest-xdist).

`--dist loadfile` sends each test module, whole, to one worker: the module-scoped servers,
deployments and models are built once, and a module's tests never run beside each other.
Different modules do run at the same time, each in its own worker process with its own
basetemp (`tmp_path`, `tmp_path_factory`), against the same machine: one dockerd, one HAProxy
binary, one set of loopback ports.

What a test module must do to be parallel-safe (and what every module here does):
- ports: take them from `orchestrator.runtime.base.free_port()` (or bind port 0), never fixed;
- files: write only under `tmp_path` / `tmp_path_factory` (a project copy, models, state dirs,
  Prometheus data, router files), never into the checkout, never a fixed /tmp path;
- session fixtures run once per WORKER, not once per run: what is shared by every worker
  (docker images, anything outside the basetemp) is built under
  `tests.helpers.parallel.machine_lock(...)`, or once with `once_per_run(...)`;
- Docker: deployment names come from `tests.helpers.parallel.docker_name(what)` (`t<id>_<what>`,
  id = a hash of this checkout, so another checkout on the same dockerd never touches them) and
  are unique in the whole suite; tests/integration/docker's sweep removes this checkout's leftover
  `t<id>_*` containers once at the start of the run and once at its end; modules elsewhere use
  another kind (`docker_name(what, "rd")`) and remove only theirs;
- environment: never change `os.environ` or the working directory of the worker process
  (pass `env=` / `cwd=` to subprocesses, or use `monkeypatch`);
- waits: on a condition with a deadline (workers compete for the CPU, so a fixed sleep or a
  timing bound that holds alone may not hold in parallel).
A module that cannot share the machine with others may be put alone with
`pytestmark = pytest.mark.xdist_group("NAME")` and `--dist loadgroup`; none needs it today.
"""

from __future__ import annotations

import pytest

from tests.helpers.parallel import CHECKOUT_ID, DOCKER_SWEEP, is_worker, ran_in_this_run


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In the controller (or a serial run), after every test: sweep the Docker test containers."""
    if is_worker(session.config) or not ran_in_this_run(session.config, DOCKER_SWEEP):
        return
    from tests.integration.docker.conftest import sweep_test_containers

    try:
        sweep_test_containers()
    except Exception as exc:  # the run's result stands; say what was left
        print(f"\nDocker test containers not swept at the end: {exc}")


# The longest modules start first, so that none starts near the end while the other workers sit
# idle (xdist hands whole modules out in collection order: `make test` passes
# --no-loadscope-reorder). From the last measured run, longest first; a module not listed runs
# after these, integration before unit. A stale entry costs nothing.
# Module totals (setup + tests + teardown), seconds: measured at load 10-13 / the quiet run's
# (rollout_local and rollout_docker estimated from docker_runtime's ratio of the two, 1.95).
SLOW_FIRST = (
    "tests/integration/rollout/test_rollout_local.py",  # 1164 / ~600
    "tests/integration/rollout/test_rollout_docker.py",  # 998 / ~510
    "tests/integration/kube/test_kube_rollout_ratio.py",  # ~232 (round 5, load 6-9)
    "tests/integration/kube/test_kube_rollout_gateway.py",  # ~155
    "tests/integration/kube/test_kube_prometheus.py",  # 70-130
    "tests/integration/kube/test_kube_runtime_canary.py",  # ~112
    "tests/integration/kube/test_kube_runtime_cli.py",  # ~88
    "tests/integration/kube/test_kube_runtime.py",  # ~85
    "tests/integration/docker/test_docker_runtime.py",  # 545 / ~280
    "tests/integration/docker/test_docker_capture.py",
    "tests/integration/monitor/test_monitor_local.py",
    "tests/integration/runtime/test_local_runtime.py",
    "tests/integration/router/test_haproxy.py",
    "tests/integration/test_quickstart.py",
    "tests/integration/test_exit_codes.py",
    "tests/integration/rollout/test_rollout_labels.py",
    "tests/integration/cli/test_client_only_install.py",
    "tests/integration/rollout/test_rollout_gates_local.py",
    "tests/integration/cli/test_prediction_logs_cli.py",
    "tests/integration/cli/test_tune.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """A short base temp folder per checkout: under xdist pytest's default adds `popen-gwN/`, and
    a router's admin socket under a test project then passes HAProxy's 97-byte unix path limit."""
    import os

    if config.option.basetemp is None and not is_worker(config):
        config.option.basetemp = f"/tmp/tfso{os.getuid()}-{CHECKOUT_ID[:6]}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}

    def key(item: pytest.Item) -> tuple[int, int]:
        path = item.nodeid.split("::", 1)[0]
        return rank.get(path, len(rank)), 0 if path.startswith("tests/integration/") else 1

    items.sort(key=key)  # stable: a module's tests keep their order
