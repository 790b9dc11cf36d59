"""Starting a `tfs-model-server` process: forked by a preloaded launcher when one is configured
(see orchestrator.server.launcher), executed otherwise.

Importing TensorFlow costs about 6 s of CPU at every server start; the launcher has paid it once.
Set TFSO_SERVER_LAUNCHER to a launcher's socket to use it. `start_server` falls back to an ordinary
exec, with a warning, when no launcher answers there or when it refuses: a launcher only forks
servers for the same interpreter, the same orchestrator install and the same import-time
environment (TF_*, CUDA_*, OMP_*, ... are read once, when TensorFlow loads), since a forked server
would otherwise silently run with the launcher's.

Nothing here imports TensorFlow: the local runtime and test helpers use it to start servers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

ENV = "TFSO_SERVER_LAUNCHER"
# Read when TensorFlow, oneDNN, OpenMP, gRPC or Python itself start: fixed at the launcher's import.
IMPORT_TIME_PREFIXES = ("TF_", "CUDA", "NVIDIA", "OMP_", "KMP_", "MKL", "ONEDNN", "DNNL", "GRPC_",
                        "PYTHON", "LD_", "MALLOC", "GLIBC", "XLA_", "TPU_", "JAX_")  # fmt: skip
# Also read once, but they only set how much TensorFlow's C++ side logs: a forked server keeps the
# launcher's levels rather than being refused (the CLI quiets TensorFlow for itself, at level 3).
LOG_LEVELS = ("TF_CPP_MIN_LOG_LEVEL", "TF_CPP_MAX_VLOG_LEVEL")
# What a server's /proc/PID/cmdline holds, executed or forked (a fork shows the launcher's).
SERVER_MARKERS = ("tfs-model-server", "orchestrator.server")

log = logging.getLogger("tfso.launcher")


class LauncherRefused(Exception):
    """The launcher answered but will not start this server (the reason says why)."""


def fingerprint(env: Mapping[str, str]) -> dict[str, Any]:
    """What a forked server inherits from the launcher instead of taking from its own request."""
    import orchestrator

    return {
        "python": f"{os.path.abspath(sys.executable)} ({sys.prefix})",
        "orchestrator": os.path.realpath(os.path.dirname(orchestrator.__file__)),
        "env": {
            k: v
            for k, v in sorted(env.items())
            if k.startswith(IMPORT_TIME_PREFIXES) and k not in LOG_LEVELS
        },
    }


def mismatch(
    mine: dict[str, Any], theirs: dict[str, Any], set_by_import: Mapping[str, str] = {}
) -> str | None:
    """Why a server asked for with `theirs` cannot be forked from a launcher with `mine`, or None.
    A variable TensorFlow sets as it loads (TPU_ML_PLATFORM...) matches when it holds that value:
    a client that imported TensorFlow passes it on."""
    for key in ("python", "orchestrator"):
        if mine[key] != theirs.get(key):
            return (
                f"{key} differs: the launcher runs {mine[key]}, the request wants {theirs.get(key)}"
            )
    a, b = mine["env"], theirs.get("env", {})
    differ = sorted(
        k
        for k in set(a) | set(b)
        if a.get(k) != b.get(k) and not (k in set_by_import and b.get(k) == set_by_import[k])
    )
    if differ:
        return f"import-time environment differs in {', '.join(differ)}"
    return None


# -- the client side ---------------------------------------------------------------------------------
class Launched:
    """A server forked by the launcher, with the parts of Popen's interface callers use.

    The launcher reports the exit status on the connection this request opened; when that report
    cannot come (the launcher is gone), poll() falls back to /proc and reports -1 once the process
    has ended, since only a parent can learn a process's exit code."""

    def __init__(self, sock: socket.socket, pid: int, args: list[str]) -> None:
        self._sock = sock
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._buf = b""
        self._reports = True

    def _read_report(self, timeout_s: float | None) -> None:
        if not self._reports:
            return
        self._sock.settimeout(timeout_s)
        try:
            while b"\n" not in self._buf:
                chunk = self._sock.recv(4096)
                if not chunk:
                    self._reports = False
                    return
                self._buf += chunk
        except (TimeoutError, BlockingIOError):
            return
        except OSError:
            self._reports = False
            return
        line, _, self._buf = self._buf.partition(b"\n")
        msg = json.loads(line)
        if "exit" in msg:
            self.returncode = int(msg["exit"])
            self._sock.close()
            self._reports = False

    def _gone(self) -> bool:
        from orchestrator import procs

        return not procs.process_alive(self.pid, None, SERVER_MARKERS)

    def poll(self) -> int | None:
        if self.returncode is None:
            self._read_report(0)
            if self.returncode is None and not self._reports and self._gone():
                self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            if self._reports:
                self._read_report(0.2 if left is None else min(0.2, left))
            else:
                time.sleep(0.05 if left is None else min(0.05, left))  # not our child: poll /proc
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _fd(stream: IO[Any] | int, devnull: int) -> int:
    if stream == subprocess.DEVNULL:
        return devnull
    if isinstance(stream, int):
        if stream < 0:
            raise ValueError("a launched server writes to a file or DEVNULL, not to a pipe")
        return stream
    return stream.fileno()


def launch(
    socket_path: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdout: IO[Any] | int,
    stderr: IO[Any] | int | None = None,
    new_session: bool = False,
    timeout_s: float = 10.0,
) -> Launched:
    """Ask the launcher at `socket_path` for a server; OSError when none answers there,
    LauncherRefused when it answers no."""
    request = {"argv": list(argv), "env": dict(env), "cwd": os.getcwd(), "new_session": new_session,
               "fingerprint": fingerprint(env)}  # fmt: skip
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(socket_path)
        with open(os.devnull, "r+b") as devnull:
            out = _fd(stdout, devnull.fileno())
            err = (
                out
                if stderr is None or stderr == subprocess.STDOUT
                else _fd(stderr, devnull.fileno())
            )
            socket.send_fds(
                sock, [json.dumps(request).encode() + b"\n"], [devnull.fileno(), out, err]
            )
        buf = b""
        while b"\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError(
                    f"the launcher at {socket_path} closed the connection before answering"
                )
            buf += chunk
        line, _, rest = buf.partition(b"\n")
        answer = json.loads(line)
        if "error" in answer:
            raise LauncherRefused(answer["error"])
        proc = Launched(sock, int(answer["pid"]), list(argv))
        proc._buf = rest
        return proc
    except BaseException:
        sock.close()
        raise


def is_plain_server(command: Sequence[str]) -> bool:
    """`tfs-model-server` beside this interpreter, or this interpreter running the server module:
    what a launcher's fork is equal to."""
    cmd = list(command)
    here = os.path.dirname(os.path.abspath(sys.executable))
    if len(cmd) == 1:
        return os.path.abspath(cmd[0]) == os.path.join(here, "tfs-model-server")
    if len(cmd) == 3 and os.path.abspath(cmd[0]) == os.path.abspath(sys.executable):
        return (cmd[1], cmd[2]) in (
            ("-m", "orchestrator.server.main"),
            ("-c", "from orchestrator.server.main import main; main()"),
        )
    return False


def start_server(
    command: Sequence[str],
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdout: IO[Any] | int,
    stderr: IO[Any] | int | None = None,
    new_session: bool = False,
) -> subprocess.Popen | Launched:
    """`command + argv` as a new server process: forked by the launcher named in `env` when one
    answers and accepts, otherwise executed (the same server, paying TensorFlow's import).

    Only a plain server command is forked: a command that wraps the server (`taskset`, `nice`,
    another interpreter...) is executed, so the wrapper is honoured, and so is a pipe back to us
    (which needs our own child)."""
    path = env.get(ENV)
    if path and is_plain_server(command) and subprocess.PIPE not in (stdout, stderr):
        try:
            return launch(
                path, argv, env=env, stdout=stdout, stderr=stderr, new_session=new_session
            )
        except LauncherRefused as e:
            log.warning("the server launcher at %s refused this server (%s); starting it the usual "
                        "way", path, e)  # fmt: skip
        except OSError as e:
            log.warning("no server launcher answers at %s (%s); starting the server the usual way "
                        "(fix: start one with `python -m orchestrator.server.launcher --socket %s`, "
                        "or unset %s)", path, e, path, ENV)  # fmt: skip
    return subprocess.Popen([*command, *argv], stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=subprocess.STDOUT if stderr is None else stderr, env=dict(env),
                            start_new_session=new_session)  # fmt: skip
