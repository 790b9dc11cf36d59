"""One preloaded server launcher per worker (orchestrator.server.launcher), for every server the
integration tests start: ServerProcess, the local runtime's replicas and canaries (also from
`tfsctl` subprocesses, which inherit the variable), the emulated cluster's pods.

A server start then costs about 0.3 s of CPU instead of TensorFlow's 6 s import, on a suite that
starts hundreds of servers on 2 cores. The servers are the same code run with the same flags and
environment; tests that need the exec path itself (the README's quickstart, the command line a
replica shows in /proc) remove TFSO_SERVER_LAUNCHER for what they start, and the launcher's own
tests cover the fork (tests/integration/server/test_launcher.py).

This sets TFSO_SERVER_LAUNCHER in the worker's environment once, before its first integration
test: the one exception to "never change os.environ" (tests/conftest.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.launch import ENV
from tests.helpers.launcher import start_launcher, terminate


@pytest.fixture(scope="session", autouse=True)
def server_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    if os.environ.get("TFSO_TEST_NO_LAUNCHER") or os.environ.get(ENV):
        yield None  # asked to exec every server, or a launcher is already given
        return
    sock = tmp_path_factory.mktemp("launcher") / "l.sock"
    proc = start_launcher(sock)
    os.environ[ENV] = str(sock)
    try:
        yield sock
    finally:
        os.environ.pop(ENV, None)
        terminate(proc)

