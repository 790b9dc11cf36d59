"""Start a preloaded server launcher for tests, and wait for it on a condition with a deadline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers.server import ServerExited, wait_until


def start_launcher(sock: Path, *, env: dict[str, str] | None = None,
                   timeout_s: float = 180) -> subprocess.Popen:
    """`python -m orchestrator.server.launcher --socket SOCK`, answering when this returns. Its
    environment is the servers' (ServerProcess and the local runtime add TF_CPP_MIN_LOG_LEVEL=2)."""
    log = sock.with_suffix(".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.server.launcher", "--socket", str(sock)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env or {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )  # fmt: skip

    def answers() -> bool:
        if proc.poll() is not None:
            raise ServerExited(f"the launcher exited with {proc.returncode}:\n{log.read_text()}")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
        return True

    try:
        wait_until(answers, timeout_s=timeout_s, what=f"launcher on {sock}",
                   logs=lambda: log.read_text(errors="replace"))  # fmt: skip
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def terminate(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


def without_launcher() -> dict[str, str]:
    """The worker's environment minus the launcher: what a subprocess needs to exec its servers
    (the exec path is what users get by default; /proc shows the server's own command line)."""
    from orchestrator.launch import ENV

    return {k: v for k, v in os.environ.items() if k != ENV}
