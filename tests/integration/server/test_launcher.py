"""The preloaded launcher (orchestrator.server.launcher) on real servers: a forked server serves
with its own flags and environment and reports its exit status; a refusing or absent launcher falls
back to exec with a warning; servers outlive the launcher.

These tests start their own launchers (the worker's shared one is never stopped here)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from orchestrator.launch import ENV, Launched, LauncherRefused, launch, start_server
from tests.helpers.launcher import start_launcher
from tests.helpers.server import SERVER_CMD, free_port, wait_until

pytestmark = pytest.mark.integration


def server_env(sock: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TFS_BIND_HOST": "127.0.0.1",
            ENV: str(sock), **extra}  # fmt: skip


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, subprocess.Popen]]:
    sock = tmp_path_factory.mktemp("own-launcher") / "l.sock"
    proc = start_launcher(sock)
    yield sock, proc
    proc.terminate()
    proc.wait(20)


def serve(
    sock: Path, model_root: Path, log: Path, **env: str
) -> tuple[Launched | subprocess.Popen, int]:
    rest = free_port()
    args = [f"--port={free_port()}", f"--rest_api_port={rest}", "--model_name=half_plus_two",
            f"--model_base_path={model_root / 'half_plus_two'}"]  # fmt: skip
    with open(log, "wb") as out:
        proc = start_server(SERVER_CMD, args, env=server_env(sock, **env), stdout=out)
    return proc, rest


def predicts(rest: int, proc: Launched | subprocess.Popen) -> bool:
    assert proc.poll() is None, f"the server exited with {proc.returncode}"
    url = f"http://127.0.0.1:{rest}/v1/models/half_plus_two:predict"  # version 2: 0.5x + 3
    return requests.post(url, json={"instances": [2.0]}, timeout=5).json() == {"predictions": [4.0]}


def test_a_forked_server_serves_with_its_own_environment_and_reports_its_exit(
    launcher: tuple[Path, subprocess.Popen], model_root: Path, tmp_path: Path
) -> None:
    sock, launcher_proc = launcher
    log = tmp_path / "server.log"
    proc, rest = serve(sock, model_root, log, TFS_LOG_FORMAT="json")
    try:
        assert isinstance(proc, Launched), "the launcher did not fork this server"
        ppid = int(Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert ppid == launcher_proc.pid
        wait_until(lambda: predicts(rest, proc), timeout_s=60, what="the forked server",
                   logs=log.read_text)  # fmt: skip
        lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
        assert lines and all(
            "msg" in json.loads(ln) or "message" in json.loads(ln) for ln in lines
        ), (
            "TFS_LOG_FORMAT=json from the request, not the launcher's text format:\n"
            + log.read_text()
        )
    finally:
        proc.terminate()
    assert proc.wait(30) == 0  # a clean stop, reported by the launcher


def test_a_server_that_fails_to_start_reports_255(
    launcher: tuple[Path, subprocess.Popen], tmp_path: Path
) -> None:
    sock, _ = launcher
    log = tmp_path / "server.log"
    with socket.socket() as taken:  # its gRPC port is in use
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with open(log, "wb") as out:
            proc = start_server(SERVER_CMD, [f"--port={port}", "--model_name=m",
                                             f"--model_base_path={tmp_path / 'm'}"],
                                env=server_env(sock), stdout=out)  # fmt: skip
        try:
            assert isinstance(proc, Launched)
            assert proc.wait(60) == 255, log.read_text()
        finally:
            proc.kill()  # a no-op once it has exited; a server that kept running must not leak
    assert "Failed to start server" in log.read_text()


def test_a_refusing_or_absent_launcher_falls_back_to_exec(
    launcher: tuple[Path, subprocess.Popen], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sock, _ = launcher
    other = server_env(
        sock, TF_ENABLE_ONEDNN_OPTS="0" if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0" else "1"
    )
    with pytest.raises(LauncherRefused, match="TF_ENABLE_ONEDNN_OPTS"):
        launch(str(sock), ["--version"], env=other, stdout=subprocess.DEVNULL)
    for env, said in (
        (other, "refused this server"),
        (server_env(tmp_path / "nobody.sock"), "fix:"),
    ):
        caplog.clear()
        out = tmp_path / "version.out"
        with caplog.at_level(logging.WARNING, logger="tfso.launcher"), open(out, "wb") as fh:
            proc = start_server(SERVER_CMD, ["--version"], env=env, stdout=fh)
        assert isinstance(proc, subprocess.Popen) and proc.wait(120) == 0
        assert "TensorFlow ModelServer" in out.read_text()
        assert said in caplog.text, caplog.text


def test_servers_outlive_their_launcher(model_root: Path, tmp_path: Path) -> None:
    sock = tmp_path / "l.sock"
    launcher_proc = start_launcher(sock)
    proc, rest = serve(sock, model_root, tmp_path / "server.log")
    try:
        assert isinstance(proc, Launched)
        wait_until(lambda: predicts(rest, proc), timeout_s=60, what="the forked server",
                   logs=(tmp_path / "server.log").read_text)  # fmt: skip
        launcher_proc.send_signal(signal.SIGTERM)
        assert launcher_proc.wait(30) == 0
        assert not sock.exists(), "the launcher left its socket behind"
        assert predicts(rest, proc) and proc.poll() is None
    finally:
        proc.terminate()
        if launcher_proc.poll() is None:
            launcher_proc.kill()
    # Only a parent learns an exit code: without the launcher's report the code is unknown (-1).
    assert proc.wait(30) == -1
