"""The preloaded launcher: one process imports TensorFlow and the server once, then forks a server
for each request on its Unix socket (the client side is orchestrator.launch).

A fork of a process that has already imported TensorFlow serves after about 0.3 s of CPU instead
of about 6 s; that is what makes a machine that starts many servers (the local runtime's replicas
and canaries, a test suite) fast. The server that runs is the same code with the same flags and
environment; only the import is skipped. Servers outlive the launcher: it only forks and reports
exit statuses.

    python -m orchestrator.server.launcher --socket PATH   # then TFSO_SERVER_LAUNCHER=PATH
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from orchestrator.launch import ENV, LauncherRefused, fingerprint, mismatch

# Loaded before any fork: everything a server imports on its way to serving.
PRELOAD = (
    "tensorflow",
    "orchestrator.server.main",
    "orchestrator.server.core",
    "orchestrator.server.manager",
    "orchestrator.server.rest",
    "orchestrator.server.grpc_service",
    "orchestrator.server.runner",
    "orchestrator.server.batching",
    "orchestrator.server.metrics",
    "orchestrator.server.payload_log",
    "orchestrator.server.json_tensor",
    "orchestrator.server.warmup",
    "orchestrator.server.status",
    "orchestrator.server.workers",
    "uvloop",
)
_MAX_REQUEST = 4 << 20

log = logging.getLogger("tfso.launcher")


# -- the launcher --------------------------------------------------------------------------------------
def _child(
    request: dict[str, Any], fds: list[int], inherited: list[int], set_by_import: dict[str, str]
) -> None:
    """In the forked child: become the requested server, then exit as a server process would."""
    code: int = 255
    try:
        for fd in inherited:  # the launcher's sockets and pipes are not the server's to hold
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        if request.get("new_session"):
            os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({**set_by_import, **request["env"]})  # TensorFlow sets some as it loads
        argv = list(request["argv"])
        sys.argv = ["tfs-model-server", *argv]
        from orchestrator.server.main import main

        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        import atexit
        import threading

        threading._shutdown()  # type: ignore[attr-defined]  # what interpreter exit does first
        atexit._run_exitfuncs()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code % 256)  # as exit(-1) gives 255


class _Launcher:
    def __init__(self, path: Path, mine: dict[str, Any], set_by_import: dict[str, str]) -> None:
        self.path = path
        self.mine = mine
        self.set_by_import = set_by_import
        self.sel = selectors.DefaultSelector()
        self.waiting: dict[int, socket.socket] = {}  # child pid -> the connection that asked
        self.own_fds: list[int] = []  # listening socket, wake-up pipe, selector
        self.stop = False
        self.inode = 0

    def bind(self) -> socket.socket:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(self.path))
                raise SystemExit(f"error: a launcher already answers at {self.path}\n"
                                 f"fix: use it, or stop it first")  # fmt: skip
            except ConnectionRefusedError:
                self.path.unlink()  # a dead launcher's socket
            finally:
                probe.close()
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            srv.bind(str(self.path))
        finally:
            os.umask(old)
        srv.listen(64)
        srv.setblocking(False)
        self.inode = os.stat(self.path).st_ino
        return srv

    def handle(self, conn: socket.socket) -> None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        uid = int.from_bytes(creds[4:8], sys.byteorder)
        conn.settimeout(10)
        fds: list[int] = []
        try:
            if uid != os.getuid():
                raise LauncherRefused(f"uid {uid} may not use a launcher run by uid {os.getuid()}")
            buf = b""
            while b"\n" not in buf and len(buf) < _MAX_REQUEST:
                data, got, _, _ = socket.recv_fds(conn, 65536, 3)
                fds += got
                if not data:
                    raise LauncherRefused("the request ended before its end of line")
                buf += data
            request = json.loads(buf.partition(b"\n")[0])
            if len(fds) != 3:
                raise LauncherRefused(
                    f"a request passes stdin, stdout and stderr; got {len(fds)} fds"
                )
            why = mismatch(self.mine, request.get("fingerprint", {}), self.set_by_import)
            if why:
                raise LauncherRefused(why)
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child never returns
                inherited = [
                    conn.fileno(),
                    *self.own_fds,
                    *(c.fileno() for c in self.waiting.values()),
                ]
                _child(request, fds, inherited, self.set_by_import)
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            self.waiting[pid] = conn
            conn = None  # type: ignore[assignment]
        except (LauncherRefused, ValueError, KeyError, TypeError) as e:
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"error": str(e)}).encode() + b"\n")
        except OSError as e:
            log.warning("a launch request failed: %s", e)
        finally:
            for fd in fds:
                os.close(fd)
            if conn is not None:
                conn.close()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.waiting.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(
                        json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n"
                    )
                conn.close()

    def run(self) -> None:
        srv = self.bind()
        self.sel.register(srv, selectors.EVENT_READ)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._stop)
        self.sel.register(wake_r, selectors.EVENT_READ)
        self.own_fds = [srv.fileno(), wake_r, wake_w, self.sel.fileno()]  # type: ignore[attr-defined]
        print(f"launcher ready on {self.path} (pid {os.getpid()})", flush=True)
        try:
            while not self.stop:
                for key, _ in self.sel.select(timeout=1.0):
                    if key.fileobj is srv:
                        with contextlib.suppress(BlockingIOError):
                            conn, _ = srv.accept()
                            self.handle(conn)
                    else:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 512)
                self.reap()
        finally:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == self.inode:  # not a successor's socket
                    self.path.unlink()
            srv.close()
            for conn in self.waiting.values():  # their servers run on; only the reports stop
                conn.close()

    def _stop(self, *_: object) -> None:
        self.stop = True


def serve(path: str | os.PathLike[str]) -> int:
    """Preload, then fork servers on request until SIGTERM/SIGINT. Servers outlive the launcher."""
    from orchestrator.server.main import refuse_plotting

    refuse_plotting()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    before = dict(os.environ)
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    set_by_import = {k: v for k, v in os.environ.items() if k not in before}
    _Launcher(Path(path).absolute(), fingerprint(before), set_by_import).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m orchestrator.server.launcher", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument(
        "--socket", required=True, help=f"Unix socket to listen on (give the same path in {ENV})"
    )
    args = ap.parse_args(argv)
    return serve(args.socket)


if __name__ == "__main__":
    sys.exit(main())
