"""A real Prometheus (Debian's `prometheus` binary) for one deployment: up, down, status.

Everything lives under `.tfso/monitor/NAME/`: prometheus.yml, rules.yml, the file_sd target
lists, `data/` (the TSDB), prometheus.log and monitor.json (pid, port, settings). Prometheus
binds 127.0.0.1 only. `up` on a running monitor refreshes its targets and changes nothing else.

Runtimes: the local runtime's replicas, canary and router all listen on 127.0.0.1, and Prometheus
runs beside them as a process. For a Docker deployment it runs as a container (monitor/container:
a local image built from the host's Debian binary, never pulled; host network; the folder
mounted at the same path), so the same files and URLs serve both.

A deployment that logs payloads also gets the quality exporter (monitor/exporter.py: drift and
late-label accuracy gauges), a process on 127.0.0.1 that `down` stops with Prometheus.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from orchestrator.monitor import MonitorError, container
from orchestrator.monitor.rules import RuleNames, Thresholds, rules_yaml
from orchestrator.monitor.scrape import (
    QUALITY_TARGETS,
    REPLICA_TARGETS,
    ROUTER_TARGETS,
    RULES_FILE,
    Intervals,
    metrics_path,
    prometheus_yaml,
    quality_targets,
    replica_targets,
    router_targets,
    targets_json,
)
from orchestrator.runtime.base import port_in_use
from orchestrator.state import StateStore, write_atomic

DEFAULT_PORT = 9090
INFO = "monitor.json"


@dataclass(frozen=True)
class QualitySettings:
    """The quality exporter: where the payload log is and how often drift is recomputed."""

    prefix: str
    port: int
    window_s: float = 3600.0
    refresh_s: float = 15.0


@dataclass(frozen=True)
class MonitorSettings:
    port: int = DEFAULT_PORT
    window: str = "1m"
    intervals: Intervals = field(default_factory=Intervals)
    thresholds: Thresholds = field(default_factory=Thresholds)
    quality: QualitySettings | None = None


def folder(store: StateStore, name: str) -> Path:
    return store.root / "monitor" / name


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise MonitorError("Prometheus is not installed (no `prometheus` on PATH)",
                           fix="install Debian's package: `apt-get install -y prometheus` "
                               "(or `make system`)")
    return found


def _deployment(store: StateStore, name: str) -> dict[str, Any]:
    state = store.load(name)
    if state is None:
        known = ", ".join(store.names()) or "none"
        raise MonitorError(f"no deployment named {name!r} (deployments: {known})",
                           fix=f"deploy it first with `tfsctl deploy {name}`")
    return state


def refresh_targets(store: StateStore, name: str) -> bool:
    """Rewrite the target lists from the deployment's state (a canary came or went).

    A no-op (False) when no monitor was ever set up for `name`; Prometheus re-reads the files.
    """
    where = folder(store, name)
    state = store.load(name)
    if state is None or not (where / INFO).exists():
        return False
    canary = store.load_canary(name)
    write_atomic(where / REPLICA_TARGETS, targets_json(replica_targets(name, state, canary)))
    write_atomic(where / ROUTER_TARGETS, targets_json(router_targets(name, state)))
    info = read_info(store, name) or {}
    quality = info.get("quality") or {}
    write_atomic(where / QUALITY_TARGETS, targets_json(quality_targets(name, quality.get("port"))))
    return True


def _pid_alive(pid: int, marker: bytes = b"prometheus") -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return fields[0] not in ("Z", "X") and marker in cmd


EXPORTER_MARKER = b"orchestrator.monitor.exporter"


def _start_exporter(name: str, model: str, where: Path, q: QualitySettings,
                    deadline_s: float) -> int:
    """The quality exporter process; returns its pid once /metrics answers."""
    import sys

    if port_in_use("127.0.0.1", q.port):
        raise MonitorError(f"port {q.port} on 127.0.0.1 (the quality exporter's) is already in use",
                           fix="choose another with `--quality-port N`")
    log_path = where / "exporter.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.monitor.exporter", "--model", model,
             "--prefix", q.prefix, "--folder", str(where), "--port", str(q.port),
             "--window", str(q.window_s), "--refresh", str(q.refresh_s)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    end = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise MonitorError(f"the quality exporter exited at start (code {proc.returncode})",
                               fix=f"read {log_path}", logs=_tail(log_path))
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"http://127.0.0.1:{q.port}/metrics", timeout=1).status_code == 200:
                return proc.pid
        if time.monotonic() > end:
            _kill(proc.pid, marker=EXPORTER_MARKER)
            raise MonitorError(f"the quality exporter did not answer within {deadline_s:g} s",
                               fix=f"read {log_path}", logs=_tail(log_path))
        time.sleep(0.1)


def read_info(store: StateStore, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((folder(store, name) / INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_running(info: dict[str, Any] | None) -> bool:
    if info and info.get("container"):
        try:
            return container.running(container.docker_api(), info["container"])
        except MonitorError:  # Docker is not reachable: the container cannot be running
            return False
    return bool(info and info.get("pid") and _pid_alive(int(info["pid"])))


@dataclass
class _Launched:
    """A Prometheus being started: a host process (local runtime) or a container (docker)."""

    what: str
    pid: int | None = None
    container: str | None = None
    image: str | None = None
    proc: Any = None
    api: Any = None
    log_path: Path | None = None

    def alive(self) -> bool:
        if self.proc is not None:
            if self.proc.poll() is not None:
                self.what = f"code {self.proc.returncode}"
                return False
            return True
        return container.running(self.api, self.container or "")

    def logs(self) -> str:
        if self.container:
            return container.logs(self.api, self.container)
        return _tail(self.log_path) if self.log_path else ""

    def stop(self) -> None:
        if self.container:
            container.remove(self.api, self.container)
        elif self.pid:
            _kill(self.pid)


def _launch(name: str, state: dict[str, Any], binary: str, args: list[str], where: Path,
            log_path: Path) -> _Launched:
    if state.get("runtime") == "docker":
        api = container.docker_api()
        image = container.ensure_image(api, binary)
        cid = container.start(api, name, image, args, where)
        return _Launched(f"container {container.container_name(name)}", container=cid,
                         image=image, api=api)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([binary, *args], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return _Launched("process", pid=proc.pid, proc=proc, log_path=log_path)


def _check_writable(data: Path) -> None:
    try:
        data.mkdir(parents=True, exist_ok=True)
        probe = data / ".tfso-write-check"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise MonitorError(f"cannot write Prometheus data under {data}: {exc.strerror}",
                           fix=f"make {data} writable by this user, or run from a folder you own "
                               "(TFSO_STATE_DIR moves the whole .tfso folder)") from exc


def _check_config(where: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    out = subprocess.run([promtool, "check", "config", str(where / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise MonitorError("generated Prometheus config rejected by promtool",
                           fix="report this as a bug", logs=out.stdout + out.stderr)


def up(store: StateStore, name: str, settings: MonitorSettings, *,
       deadline_s: float = 30.0) -> dict[str, Any]:
    """Start Prometheus for `name` (or refresh a running one); returns monitor.json's content."""
    state = _deployment(store, name)
    if state.get("runtime") not in ("local", "docker"):
        raise MonitorError(
            f"{name} runs on the {state.get('runtime')} runtime; `tfsctl monitor up` supports the "
            "local and docker runtimes",
            fix="point your own Prometheus at the replicas (`tfsctl monitor up` writes the scrape "
                "config and rules for a local deployment)")
    path = metrics_path(state)
    if path is None:
        raise MonitorError(f"{name} does not export Prometheus metrics",
                           fix="set `monitoring: {prometheus: true}` in its spec and deploy again")
    binary = prometheus_binary()
    where = folder(store, name)
    info = read_info(store, name)
    if is_running(info):
        assert info is not None
        refresh_targets(store, name)
        return {**info, "action": "unchanged"}
    if port_in_use("127.0.0.1", settings.port):
        raise MonitorError(f"port {settings.port} on 127.0.0.1 is already in use",
                           fix="choose another with `--port N`, or stop what listens there "
                               "(`ss -ltnp` shows it)")
    _check_writable(where / "data")
    names = RuleNames(settings.window)
    write_atomic(where / RULES_FILE, rules_yaml(names, settings.thresholds))
    write_atomic(where / "prometheus.yml", prometheus_yaml(where, path, settings.intervals))
    canary = store.load_canary(name)
    write_atomic(where / REPLICA_TARGETS, targets_json(replica_targets(name, state, canary)))
    write_atomic(where / ROUTER_TARGETS, targets_json(router_targets(name, state)))
    q = settings.quality
    write_atomic(where / QUALITY_TARGETS, targets_json(quality_targets(name, q.port if q else None)))
    _check_config(where)
    exporter_pid = None
    if q is not None:
        model = (state.get("models") or [name])[0]
        exporter_pid = _start_exporter(name, model, where, q, deadline_s)
    args = [f"--config.file={where / 'prometheus.yml'}", f"--storage.tsdb.path={where / 'data'}",
            f"--web.listen-address=127.0.0.1:{settings.port}", "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=15d"]
    log_path = where / "prometheus.log"
    launched = _launch(name, state, binary, args, where, log_path)
    url = f"http://127.0.0.1:{settings.port}"
    end = time.monotonic() + deadline_s
    while True:
        if not launched.alive():
            if exporter_pid:
                _kill(exporter_pid, marker=EXPORTER_MARKER)
            launched.stop()
            raise MonitorError(f"Prometheus exited at start ({launched.what})",
                               fix=f"read {log_path}", logs=launched.logs())
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/-/ready", timeout=1).status_code == 200:
                break
        if time.monotonic() > end:
            launched.stop()
            if exporter_pid:
                _kill(exporter_pid, marker=EXPORTER_MARKER)
            raise MonitorError(f"Prometheus did not become ready within {deadline_s:g} s",
                               fix=f"read {log_path}", logs=launched.logs())
        time.sleep(0.1)
    info = {"name": name, "pid": launched.pid, "container": launched.container,
            "image": launched.image, "port": settings.port, "url": url,
            "folder": str(where), "window": settings.window,
            "intervals": asdict(settings.intervals), "thresholds": asdict(settings.thresholds),
            "started_at": time.time(),
            "quality": None if q is None else {**asdict(q), "pid": exporter_pid}}
    write_atomic(where / INFO, json.dumps(info, indent=2) + "\n")
    return {**info, "action": "started"}


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _kill(pid: int, deadline_s: float = 15.0, marker: bytes = b"prometheus") -> None:
    if not _pid_alive(pid, marker):  # gone, or the pid now belongs to something else
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    end = time.monotonic() + deadline_s
    while _pid_alive(pid, marker) and time.monotonic() < end:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _pid_alive(pid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def down(store: StateStore, name: str) -> dict[str, Any]:
    """Stop Prometheus for `name`; its data stays in `.tfso/monitor/NAME/data`."""
    info = read_info(store, name)
    if info is None:
        raise MonitorError(f"no monitor for {name!r}", fix=f"start one with `tfsctl monitor up {name}`")
    was_running = is_running(info)
    if info.get("container"):
        with contextlib.suppress(MonitorError):
            container.remove(container.docker_api(), info["container"])
    elif was_running:
        _kill(int(info["pid"]))
    quality = info.get("quality") or {}
    if quality.get("pid"):
        _kill(int(quality["pid"]), marker=EXPORTER_MARKER)
    (folder(store, name) / INFO).unlink(missing_ok=True)
    return {"name": name, "stopped": was_running, "pid": info.get("pid"),
            "container": info.get("container"),
            "data": str(folder(store, name) / "data")}


def status(store: StateStore, name: str) -> dict[str, Any]:
    """Running or not, and each target's health as Prometheus sees it."""
    info = read_info(store, name)
    if info is None:
        raise MonitorError(f"no monitor for {name!r}", fix=f"start one with `tfsctl monitor up {name}`")
    running = is_running(info)
    result: dict[str, Any] = {"name": name, "running": running, "url": info["url"],
                              "pid": info["pid"], "folder": info["folder"], "targets": [],
                              "alerts": []}
    if not running:
        return result
    refresh_targets(store, name)
    try:
        data = requests.get(info["url"] + "/api/v1/targets", timeout=5).json()["data"]
    except (requests.RequestException, ValueError, KeyError):
        return result
    for t in data.get("activeTargets", []):
        labels = t.get("labels", {})
        result["targets"].append({
            "job": labels.get("job"), "role": labels.get("role"), "replica": labels.get("replica", ""),
            "url": t.get("scrapeUrl"), "health": t.get("health"), "error": t.get("lastError", ""),
        })
    result["alerts"] = []
    with contextlib.suppress(requests.RequestException, ValueError, KeyError):
        alerts = requests.get(info["url"] + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        result["alerts"] = [{"alert": a["labels"].get("alertname"), "state": a.get("state"),
                             "summary": a.get("annotations", {}).get("summary", ""),
                             "since": a.get("activeAt", "")} for a in alerts]
    return result
