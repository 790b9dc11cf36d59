"""Worker processes: N copies of the server share the gRPC and REST ports (SO_REUSEPORT).

One Python process answers on one event loop, so it uses about one core for protocol work; TF
Serving uses them all. `--rest_api_num_threads=N` (upstream: REST handler threads, "auto" when not
set) therefore starts min(N, CPUs) worker processes; not set, the server is one process, because
every worker holds its own copy of every model in memory. More processes than cores would only add
memory and context switches, so N above the CPU count is capped (and logged); N < 1 or N > 1024 is
refused. `--grpc_max_threads` stays per worker (not used: gRPC handlers are coroutines).

The first process becomes a supervisor that loads no model. It starts the workers
(`python -m orchestrator.server.main` with the same flags and TFS_WORKER=i), waits until every one
is serving, restarts a worker that exits on its own (backing off; it gives up, stops the others and
exits 255 after five failed restarts in a row), and on SIGTERM / SIGINT stops them all (exit 0 when
every worker stopped cleanly, else 255). A start-up failure of any worker stops the others: the
supervisor prints TF Serving's `Failed to start server` line once and exits 255.

The workers talk over UNIX sockets in a private directory (one per worker, `w<i>.sock`):
- a reload (gRPC HandleReloadConfigRequest) received by one worker is applied there, then by every
  other worker before the RPC answers, and saved, so a restarted worker loads the latest config;
  `--model_config_file_poll_wait_seconds` polls in every worker;
- the Prometheus page is the sum over workers (counters and histograms add up; see `merge_pages`
  for gauges). Every worker writes its own page to `w<i>.prom` there every SNAPSHOT_S (from a
  thread, only when it changed); the worker that is scraped merges its own page, fresh, with the
  others' latest files, so a scrape never waits on another process (#13). The others' counts
  are therefore up to SNAPSHOT_S old; each part only grows, so the sum stays monotonic.
A crashed worker's last counts stay in the sum until its replacement writes its own (then they
drop: a counter reset, which Prometheus handles).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("tfs.server")

INDEX_ENV = "TFS_WORKER"  # this process is worker i (set by the supervisor only)
DIR_ENV = "TFS_WORKER_DIR"
PARENT_ENV = "TFS_WORKER_PARENT"
READY = "TFS_WORKER_READY"  # a worker's stdout line once it serves; the supervisor eats it
MAX_WORKERS = 1024
GIVE_UP_AFTER = 5  # failed restarts in a row
STABLE_S = 10.0  # a worker that served this long before exiting counts as a fresh crash
STOP_TIMEOUT_S = 30.0
SNAPSHOT_S = 0.25  # how often a worker writes its own metrics page for the others' scrapes


def worker_count(requested: int, cpus: int) -> int:
    """Processes for `--rest_api_num_threads=requested` (0 = not set); raises ValueError."""
    if requested == 0:
        return 1
    if requested < 1 or requested > MAX_WORKERS:
        raise ValueError(
            f"--rest_api_num_threads={requested}: expected 1 to {MAX_WORKERS} (worker processes, "
            "at most one per CPU is used); leave it unset for one process"
        )
    return min(requested, cpus)


# -- inside a worker ------------------------------------------------------------------------------


async def _send(writer: asyncio.StreamWriter, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(struct.pack("!I", len(data)) + data)
    await writer.drain()


def _recv_sync(conn: socket.socket) -> Any:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    (size,) = struct.unpack("!I", exactly(4))
    return pickle.loads(exactly(size))  # our own private socket (0700 directory)


async def _recv(reader: asyncio.StreamReader) -> Any:
    (size,) = struct.unpack("!I", await reader.readexactly(4))
    return pickle.loads(await reader.readexactly(size))  # our own private socket (0700 directory)


class Link:
    """This worker's control socket and its calls to the other workers."""

    def __init__(self, directory: str, index: int) -> None:
        self.directory = directory
        self.index = index
        self._listener: socket.socket | None = None
        self._closed = threading.Event()
        self._siblings: tuple[list, Families] | None = None  # (file stamps, their parsed sum)

    @classmethod
    def from_env(cls) -> Link | None:
        index = os.environ.get(INDEX_ENV)
        directory = os.environ.get(DIR_ENV)
        if index is None or not directory:
            return None
        return cls(directory, int(index))

    def watch_parent(self) -> None:
        """Die with the supervisor, even if it is killed (SIGKILL cannot be forwarded)."""
        parent = int(os.environ.get(PARENT_ENV, "0") or 0)
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if parent and os.getppid() != parent:  # it died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    def _sock(self, index: int) -> str:
        return os.path.join(self.directory, f"w{index}.sock")

    async def start(
        self,
        handlers: dict[str, Callable[[Any], Coroutine[Any, Any, Any]]],
        in_thread: dict[str, Callable[[Any], Any]] | None = None,
        snapshot: Callable[[], str] | None = None,
    ) -> None:
        """Serve the control socket from a thread of its own, so a call does not queue behind
        this worker's busy event loop: `in_thread` commands run right there, `handlers`
        (coroutines) are handed to the loop and awaited. `snapshot` renders this worker's metrics
        page; it is written for the others now and every SNAPSHOT_S (see `sibling_pages`)."""
        if snapshot is not None:
            self._write_snapshot(snapshot())
            threading.Thread(
                target=self._snapshots, args=(snapshot,), name="tfs-worker-metrics", daemon=True
            ).start()
        loop = asyncio.get_running_loop()
        direct = in_thread or {}
        path = self._sock(self.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a previous run of this worker
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(16)
        self._listener = listener

        def answer(command: str, payload: Any) -> tuple:
            try:
                if command in direct:
                    return ("ok", direct[command](payload))
                future: Any = asyncio.run_coroutine_threadsafe(handlers[command](payload), loop)
                return ("ok", future.result())
            except Exception as e:  # the asking worker reports it
                return ("err", getattr(e, "code", "INTERNAL"), getattr(e, "message", str(e)))

        def serve_one(conn: socket.socket) -> None:
            with conn:
                try:
                    command, payload = _recv_sync(conn)
                    data = pickle.dumps(answer(command, payload), pickle.HIGHEST_PROTOCOL)
                    conn.sendall(struct.pack("!I", len(data)) + data)
                except (OSError, EOFError, pickle.PickleError):
                    pass

        def accept() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:  # closed
                    return
                # A reload can take long; it must not hold up a scrape meanwhile.
                threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, name="tfs-worker-link", daemon=True).start()

    def _page_file(self, index: int) -> str:
        return os.path.join(self.directory, f"w{index}.prom")

    def _write_snapshot(self, text: str) -> None:
        path = self._page_file(self.index)
        with open(f"{path}.tmp", "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(f"{path}.tmp", path)

    def _snapshots(self, render: Callable[[], str]) -> None:
        last = None
        while not self._closed.wait(SNAPSHOT_S):
            try:
                text = render()
                if text != last:
                    self._write_snapshot(text)
                    last = text
            except Exception:  # never let the thread die; the next round tries again
                log.exception("worker %d: writing its metrics page failed", self.index)

    def sibling_pages(self) -> list[str]:
        """The other workers' latest metrics pages (at most SNAPSHOT_S old)."""
        own = f"w{self.index}.prom"
        pages = []
        for name in sorted(os.listdir(self.directory)):
            if name.startswith("w") and name.endswith(".prom") and name != own:
                with contextlib.suppress(OSError), open(
                    os.path.join(self.directory, name), encoding="utf-8"
                ) as fh:
                    pages.append(fh.read())
        return pages

    def merged_page(self, own: str) -> str:
        """`own` page plus the others' latest; their parsed sum is kept until one of their
        files changes (at most every SNAPSHOT_S), so a scrape parses only its own page."""
        stamp = []
        for name in sorted(os.listdir(self.directory)):
            if name.startswith("w") and name.endswith(".prom") and name != f"w{self.index}.prom":
                with contextlib.suppress(OSError):
                    st = os.stat(os.path.join(self.directory, name))
                    stamp.append((name, st.st_mtime_ns, st.st_size))
        if self._siblings is None or self._siblings[0] != stamp:
            families: Families = {}
            for page in self.sibling_pages():
                add_page(families, page)
            self._siblings = (stamp, families)
        families = copy_families(self._siblings[1])
        add_page(families, own)
        return render_families(families)

    async def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._sock(self.index))

    def siblings(self) -> list[int]:
        out = []
        for name in os.listdir(self.directory):
            if name.startswith("w") and name.endswith(".sock"):
                with contextlib.suppress(ValueError):
                    i = int(name[1:-5])
                    if i != self.index:
                        out.append(i)
        return sorted(out)

    async def ask(self, index: int, command: str, payload: Any = None) -> tuple:
        """("ok", value) or ("err", code, message); a worker that is gone is ("gone", ...)."""
        try:
            reader, writer = await asyncio.open_unix_connection(self._sock(index))
        except OSError as e:
            return ("gone", "UNAVAILABLE", f"worker {index}: {e.strerror}")
        try:
            await _send(writer, (command, payload))
            result: tuple = await _recv(reader)
            return result
        except (OSError, asyncio.IncompleteReadError) as e:
            return ("gone", "UNAVAILABLE", f"worker {index}: {e}")
        finally:
            writer.close()

    async def ask_all(
        self, command: str, payload: Any = None, timeout: float | None = None
    ) -> list[tuple]:
        async def one(i: int) -> tuple:
            try:
                return await asyncio.wait_for(self.ask(i, command, payload), timeout)
            except TimeoutError:
                return ("gone", "DEADLINE_EXCEEDED", f"worker {i} did not answer in {timeout} s")

        return list(await asyncio.gather(*(one(i) for i in self.siblings())))

    # The latest model config, so that a restarted worker serves what the others serve.
    def save_config(self, configs: list) -> None:
        path = os.path.join(self.directory, "config.pickle")
        tmp = f"{path}.{self.index}.tmp"
        with open(tmp, "wb") as fh:
            pickle.dump(configs, fh)
        os.replace(tmp, path)

    def saved_config(self) -> list | None:
        try:
            with open(os.path.join(self.directory, "config.pickle"), "rb") as fh:
                configs: list = pickle.load(fh)  # written by our own workers
                return configs
        except FileNotFoundError:
            return None


# -- merging the workers' Prometheus pages ------------------------------------------------------

# Gauges that do not add up across processes; every other gauge (memory, queue depth and
# capacity) is the total over workers, like every counter and histogram.
_GAUGE_MERGE: dict[str, Callable[[float, float], float]] = {
    "tfso_model_version_available": min,  # available only when every worker has it
    "tfso_model_load_duration_seconds": max,
    "tfso_process_start_time_seconds": min,
}


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _fmt(x: float | int) -> str:
    return str(x) if isinstance(x, int) else f"{x:.6g}"


Families = dict[str, tuple[str, dict[str, float | int]]]  # name -> (type, series -> value)


def merge_pages(pages: list[str]) -> str:
    """One Prometheus text page from several workers' pages, series by series."""
    families: Families = {}
    for page in pages:
        add_page(families, page)
    return render_families(families)


def add_page(families: Families, page: str) -> None:
    """Merge one page's series into `families` (in place)."""
    current: dict[str, float | int] | None = None
    merge: Callable[[Any, Any], Any] = _add
    for line in page.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            fam = families.setdefault(name, (kind, {}))
            current = fam[1]
            merge = _GAUGE_MERGE.get(name, _add) if kind == "gauge" else _add
            continue
        if not line or line.startswith("#") or current is None:
            continue
        key, _, value = line.rpartition(" ")
        v = _number(value)
        old = current.get(key)
        current[key] = v if old is None else merge(old, v)


def copy_families(families: Families) -> Families:
    return {name: (kind, dict(samples)) for name, (kind, samples) in families.items()}


def render_families(families: Families) -> str:
    out: list[str] = []
    for name, (kind, samples) in families.items():
        out.append(f"# TYPE {name} {kind}")
        out.extend([f"{key} {_fmt(v)}" for key, v in samples.items()])
    return "\n".join(out) + "\n"


def _add(a: float | int, b: float | int) -> float | int:
    return a + b


# -- the supervisor ---------------------------------------------------------------------------


class Supervisor:
    """Runs `count` workers with `argv` until SIGTERM / SIGINT; see the module docstring."""

    def __init__(self, argv: list[str], count: int) -> None:
        self.argv = argv
        self.count = count
        self.directory = tempfile.mkdtemp(prefix="tfs-workers-")
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.ready: dict[int, asyncio.Event] = {}
        self.stopping = asyncio.Event()
        self.failed_line_printed = False
        self._relays: set[asyncio.Task] = set()

    async def _spawn(self, i: int) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env.update({INDEX_ENV: str(i), DIR_ENV: self.directory, PARENT_ENV: str(os.getpid())})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestrator.server.main", *self.argv,
            stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        self.procs[i] = proc
        self.ready[i] = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._relay(i, proc))
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)
        return proc

    async def _relay(self, i: int, proc: asyncio.subprocess.Process) -> None:
        """A worker's stdout to ours, minus the ready mark and repeated start-up failures."""
        assert proc.stdout is not None
        ready = self.ready[i]
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line == READY:
                ready.set()
            elif line.startswith("Failed to start server."):
                if not self.failed_line_printed:
                    self.failed_line_printed = True
                    print(line, flush=True)
            else:
                print(line, flush=True)

    async def _until_ready(self, i: int, proc: asyncio.subprocess.Process) -> bool:
        """True once worker i serves; False if it exited first or a stop was asked."""
        waits = {
            asyncio.ensure_future(self.ready[i].wait()),
            asyncio.ensure_future(proc.wait()),
            asyncio.ensure_future(self.stopping.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self.ready[i].is_set() and proc.returncode is None and not self.stopping.is_set()

    async def _stop_all(self) -> bool:
        """SIGTERM every worker, SIGKILL after STOP_TIMEOUT_S; True if all exited 0."""
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        clean = True
        for proc in self.procs.values():
            try:
                rc = await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                rc = await proc.wait()
            clean = clean and rc == 0
        await asyncio.gather(*self._relays, return_exceptions=True)
        return clean

    async def _keep(self, i: int) -> int | None:
        """Keep worker i running until a stop; an exit code means: give up with it."""
        failures = 0
        while not self.stopping.is_set():
            proc = self.procs[i]
            started = time.monotonic()
            stop = asyncio.ensure_future(self.stopping.wait())
            done = asyncio.ensure_future(proc.wait())
            await asyncio.wait({stop, done}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if self.stopping.is_set():
                done.cancel()
                return None
            rc = proc.returncode
            failures = 1 if time.monotonic() - started > STABLE_S else failures + 1
            if failures > GIVE_UP_AFTER:
                log.error(
                    "worker %d exited with %s %d times in a row; stopping the server",
                    i, rc, failures,
                )  # fmt: skip
                return 255
            delay = min(8.0, 0.5 * 2 ** (failures - 1))
            log.warning(
                "worker %d (pid %d) exited with %s; restarting it in %.1f s",
                i, proc.pid, rc, delay,
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                return None
            proc = await self._spawn(i)
            if await self._until_ready(i, proc):
                log.info("worker %d restarted (pid %d)", i, proc.pid)
        return None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self.stopping.set)
        try:
            procs = [await self._spawn(i) for i in range(self.count)]
            ok = await asyncio.gather(*(self._until_ready(i, p) for i, p in enumerate(procs)))
            if not all(ok):
                clean = await self._stop_all()
                if self.stopping.is_set() and clean:
                    return 0
                if not self.failed_line_printed:
                    print("Failed to start server. Error: UNKNOWN: a worker exited", flush=True)
                return 255
            pids = ", ".join(str(p.pid) for p in procs)
            log.info(
                "Serving with %d worker processes (pids %s; control sockets in %s)",
                self.count, pids, self.directory,
            )  # fmt: skip
            keepers = [loop.create_task(self._keep(i)) for i in range(self.count)]
            gave_up = asyncio.ensure_future(self._first_give_up(keepers))
            await asyncio.wait(
                {gave_up, asyncio.ensure_future(self.stopping.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )
            code = gave_up.result() if gave_up.done() else None
            self.stopping.set()
            await asyncio.gather(*keepers, return_exceptions=True)
            log.info("Shutting down %d workers", self.count)
            clean = await self._stop_all()
            if code is not None:
                return code
            return 0 if clean else 255
        finally:
            import shutil

            shutil.rmtree(self.directory, ignore_errors=True)

    @staticmethod
    async def _first_give_up(keepers: list[asyncio.Task]) -> int | None:
        pending = set(keepers)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.result() is not None:
                    code: int = t.result()
                    return code
        return None


def supervise(argv: list[str], count: int) -> int:
    return asyncio.run(Supervisor(argv, count).run())
