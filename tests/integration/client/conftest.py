"""A real `tfs-model-server` on loopback ports, started once per module, for the client tests.

Models are exported with TensorFlow in a subprocess (keeping TensorFlow out of this process).
Every wait has a deadline; on failure the server's log tail is in the message.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.requires import require_server, require_tool, server_bin

REPO = Path(__file__).resolve().parents[3]
SERVER_BIN = server_bin()
START_DEADLINE_S = 180.0


def free_port() -> int:
    from orchestrator.runtime.base import free_port as pick

    return pick("127.0.0.1")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Server:
    """One server process; `stop()` is safe to call twice."""

    args: list[str]
    log: Path
    grpc_port: int = field(default_factory=free_port)
    rest_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self) -> Server:
        env = {**os.environ, "TFS_BIND_HOST": "127.0.0.1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        cmd = [
            str(SERVER_BIN),
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            *self.args,
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        return self

    def wait_listening(self, deadline_s: float = START_DEADLINE_S) -> Server:
        """Until both ports accept connections (the server opens them once models loaded)."""
        deadline = time.monotonic() + deadline_s
        pending = {self.grpc_port, self.rest_port}
        while pending:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"tfs-model-server exited with {self.proc.returncode}:\n{_tail(self.log)}"
                )
            for port in list(pending):
                with socket.socket() as s:
                    s.settimeout(0.5)
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        pending.discard(port)
            if pending and time.monotonic() > deadline:
                raise AssertionError(
                    f"ports {sorted(pending)} not open after {deadline_s:g}s:\n{_tail(self.log)}"
                )
            if pending:
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models exported once per session: scale (versions 1, 2; labels), dtypes, half_plus_two."""
    require_server()
    root = tmp_path_factory.mktemp("client-models")
    result = subprocess.run(
        [sys.executable, "-m", "tests.integration.client._models", str(root)],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"model export failed:\n{result.stderr[-4000:]}"
    return root


def start_server(root: Path, log: Path, extra: Sequence[str] = (), *, wait: bool = True) -> Server:
    server = Server([f"--model_config_file={root / 'models.config'}", *extra], log)
    server.start()
    if wait:
        try:
            server.wait_listening()
        except BaseException:
            server.stop()
            raise
    return server


@pytest.fixture(scope="module")
def server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    srv = start_server(model_root, log)
    try:
        from orchestrator.client import GrpcClient

        with GrpcClient(srv.grpc_address) as client:
            for model in ("scale", "dtypes", "half_plus_two"):
                client.wait_until_available(model, timeout_s=60)
        yield srv
    finally:
        srv.stop()


def make_certs(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl)."""
    openssl = require_tool("openssl", "apt-get install -y openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other_ca"):  # other_ca signs nothing: a CA the server does not know
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca}",
            "-keyout", f"{ca}.key", "-out", f"{ca}.pem")  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}",
            "-keyout", f"{who}.key", "-out", f"{who}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{who}.ext", "-out", f"{who}.pem")  # fmt: skip
    return {name: directory / name for name in ("ca.pem", "other_ca.pem", "server.pem",
                                                "server.key", "client.pem", "client.key")}  # fmt: skip
