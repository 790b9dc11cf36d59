"""The local runtime: our TF Serving-compatible server as background processes (no Docker).

Each replica is `tfs-model-server` with exactly the flags the Docker runtime passes to
`tensorflow_model_server`, its own session (it outlives the CLI), its log in the state folder,
and REST/gRPC bound to the spec's host (127.0.0.1 by default). A pid is trusted only while
/proc shows the same process (command line and start time), so a crash or a reused pid is
detected as stale instead of being signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator import procs
from orchestrator.errors import HealthTimeout, RuntimeFailure
from orchestrator.health import model_status, wait_until_available
from orchestrator.launch import SERVER_MARKERS, start_server
from orchestrator.plan import MODELS_CONFIG, build_plan, plan_safe_reload
from orchestrator.router.haproxy import (
    HAProxyRouter,
    RouterConfig,
    Upstream,
    supports_prometheus,
    wait_until_routed,
)
from orchestrator.runtime.base import (
    CANARY,
    STABLE,
    Deployment,
    OnPoll,
    Replica,
    ReplicaStatus,
    Runtime,
    check_ports_free,
    digest,
    free_port,
    reload_config,
    wanted_versions,
)
from orchestrator.spec import Spec
from orchestrator.state import StateStore, write_files_atomic

STOP_GRACE_S = 10.0


def server_command() -> list[str]:
    script = Path(sys.executable).parent / "tfs-model-server"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from orchestrator.server.main import main; main()"]


def process_alive(pid: int, start_ticks: int | None) -> bool:
    """Our server still runs as `pid` (see orchestrator.procs)."""
    return procs.process_alive(pid, start_ticks, SERVER_MARKERS)


class LocalRuntime(Runtime):
    name = "local"

    def __init__(self, store: StateStore | None = None) -> None:
        self.store = store or StateStore()

    # -- helpers ---------------------------------------------------------------------------

    def _tail(self, name: str, replica: int, lines: int = 30) -> str:
        path = self.store.log_path(name, replica)
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _start_replica(self, name: str, index: int, args: Sequence[str], host: str,
                       extra_env: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
        log_path = self.store.log_path(name, index)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(extra_env or {}), "TFS_BIND_HOST": host}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with open(log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting replica {index}\n".encode())
            log.flush()
            proc = start_server(server_command(), args, env=env, stdout=log, new_session=True)
        return {"index": index, "pid": proc.pid, "start_ticks": procs.start_ticks(proc.pid), "_proc": proc}

    def _alive(self, replica: dict[str, Any]) -> bool:
        proc = replica.get("_proc")
        if proc is not None:  # our child: its exit status is the truth
            return proc.poll() is None
        return process_alive(replica["pid"], replica.get("start_ticks"))

    def _terminate(self, replicas: Sequence[dict[str, Any]]) -> None:
        for r in replicas:
            if self._alive(r):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(r["pid"], signal.SIGTERM)
        end = time.monotonic() + STOP_GRACE_S
        for r in replicas:
            while self._alive(r) and time.monotonic() < end:
                self._reap(r, 0.1)
            if self._alive(r):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(r["pid"], signal.SIGKILL)
                self._reap(r, 2.0)

    @staticmethod
    def _reap(replica: dict[str, Any], timeout_s: float) -> None:
        proc = replica.get("_proc")
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout_s)
        else:
            time.sleep(timeout_s)  # not our child: nothing to wait on but time

    def _wait(self, name: str, replica: dict[str, Any], wanted: dict[str, list[int]], spec: Spec,
              on_poll: OnPoll | None) -> None:
        def exited() -> str | None:
            if not self._alive(replica):
                proc = replica.get("_proc")
                code = proc.poll() if proc is not None else None
                return f"replica {replica['index']} exited" + (f" with code {code}" if code is not None else "")
            return None

        result = wait_until_available(
            f"http://127.0.0.1:{replica['rest_port']}",
            wanted,
            deadline_s=spec.health.deadline_s,
            poll_interval_s=spec.health.poll_interval_s,
            on_poll=on_poll,
            should_abort=exited,
        )
        if result.ready:
            return
        logs = self._tail(name, replica["index"])
        if result.failed:
            raise RuntimeFailure(
                f"{name}: a version failed to load ({result.detail})",
                fix="fix or re-export that version; the previous config was put back",
                logs=logs,
            )
        if exited():
            raise RuntimeFailure(
                f"{name}: {result.detail} before every wanted version was AVAILABLE",
                fix=f"read the log ({self.store.log_path(name, replica['index'])}); fix the model or spec",
                logs=logs,
            )
        raise HealthTimeout(
            f"{name}: not AVAILABLE after {spec.health.deadline_s:g} s ({result.detail})",
            fix="raise health.deadline_s for big models, or read the log with `tfsctl logs "
            f"{name}`",
            logs=logs,
        )

    # -- the interface ---------------------------------------------------------------------

    def deploy(self, specs: Sequence[Spec], *, on_poll: OnPoll | None = None) -> Deployment:
        main = specs[0]
        name = main.name
        config_dir = self.store.config_dir(name)
        base_plan = build_plan(specs, config_dir=str(config_dir))
        wanted = wanted_versions(specs)
        flags_hash = digest([a for a in base_plan.args if not a.startswith(("--port=", "--rest_api_port="))]
                            + [main.replicas, main.ports.model_dump()]
                            # only when set: a deployment without one keeps its hash (no restart)
                            + ([dict(base_plan.env)] if base_plan.env else []))
        state = self.store.load(name)
        note = ""
        if state is not None and state.get("runtime") != self.name:
            raise RuntimeFailure(
                f"{name} is deployed on the {state.get('runtime')} runtime",
                fix=f"stop it first (`tfsctl stop {name}`), or deploy with `--runtime {state.get('runtime')}`",
            )
        if state is not None:
            replicas = state["replicas"]
            if all(self._alive(r) for r in replicas):
                if state.get("flags_hash") == flags_hash:
                    if state.get("router") and not self.router(name).running():
                        state["router"] = self._start_router(name, main, replicas, wanted)
                        self.store.save(name, state)
                    return self._apply_config(name, state, base_plan.files, wanted, specs, on_poll)
                note = "server flags changed: replicas replaced"
                self._terminate(replicas)
                if state.get("router"):
                    self.router(name).stop()
            else:
                dead = [str(r["pid"]) for r in replicas if not self._alive(r)]
                note = f"previous deployment had exited (stale pid {', '.join(dead)}); started again"
                self._terminate([r for r in replicas if self._alive(r)])
                if state.get("router"):
                    self.router(name).stop()
            self.store.delete(name)

        host = main.ports.host
        check_ports_free(name, host, {"gRPC": main.ports.grpc, "REST": main.ports.rest})
        # With a router, the spec's ports are the router's and every replica gets free ones.
        fixed_ports = not main.router
        old_files = {p.name: p.read_text() for p in config_dir.glob("*")} if config_dir.is_dir() else {}
        for stale in set(old_files) - set(base_plan.files):
            (config_dir / stale).unlink()
        write_files_atomic(config_dir, base_plan.files)
        started: list[dict[str, Any]] = []
        try:
            for index in range(main.replicas):
                replica_host = host if fixed_ports else "127.0.0.1"
                grpc_port = main.ports.grpc if index == 0 and fixed_ports else free_port(replica_host)
                rest_port = main.ports.rest if index == 0 and fixed_ports else free_port(replica_host)
                plan = build_plan(specs, config_dir=str(config_dir), grpc_port=grpc_port, rest_port=rest_port)
                replica = self._start_replica(name, index, plan.args, replica_host, plan.env)
                replica.update(grpc_port=grpc_port, rest_port=rest_port)
                started.append(replica)
            for replica in started:
                self._wait(name, replica, wanted, main, on_poll)
            router = self._start_router(name, main, started, wanted) if main.router else None
        except BaseException:
            self._terminate(started)
            raise
        endpoint_host = "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1") else host
        state = {
            "name": name,
            "runtime": self.name,
            "models": [s.name for s in specs],
            "specs": [str(s.source) for s in specs if s.source],
            "flags_hash": flags_hash,
            "config_hash": digest(base_plan.files),
            "config_dir": str(config_dir),
            "rest_url": f"http://{endpoint_host}:{main.ports.rest}",
            "grpc_address": f"{endpoint_host}:{main.ports.grpc}",
            "created_at": time.time(),
            "replicas": [{k: v for k, v in r.items() if not k.startswith("_")} for r in started],
            "router": router,
        }
        self.store.save(name, state)
        return Deployment(name, self.name, "created", state["rest_url"], state["grpc_address"],
                          state["replicas"], note)

    def router(self, name: str) -> HAProxyRouter:
        routed = (self.store.load(name) or {}).get("router") or {}
        endpoint = (("127.0.0.1", routed["rest_port"], routed["grpc_port"])
                    if "rest_port" in routed else None)
        return HAProxyRouter(self.store.folder(name) / "router", endpoint=endpoint)

    # -- replicas and canary replicas (rollouts) --------------------------------------------

    def replicas(self, name: str) -> list[Replica]:
        state = self._state(name)
        result = [Replica(f"{name}-{r['index']}", STABLE, None, "127.0.0.1", r["rest_port"], r["grpc_port"])
                  for r in state["replicas"]]
        canary = self.store.load_canary(name) or {}
        result += [Replica(f"{name}-canary{r['index']}", CANARY, canary.get("version"), "127.0.0.1",
                           r["rest_port"], r["grpc_port"]) for r in canary.get("replicas", [])]
        return result

    def wait_replica(self, name: str, replica: Replica, wanted: Mapping[str, Sequence[int]],
                     spec: Spec, on_poll: OnPoll | None = None) -> None:
        for r in (self.store.load(name) or {}).get("replicas", []):
            if r["rest_port"] == replica.rest_port:  # ours: the wait that sees the process exit
                self._wait(name, r, {m: list(v) for m, v in wanted.items()}, spec, on_poll)
                return
        super().wait_replica(name, replica, wanted, spec, on_poll)

    def start_canary(self, name: str, version: int, *, count: int = 1) -> list[Replica]:
        """Canary server processes serving only `version`, on free 127.0.0.1 ports, with their
        config and logs in `deployments/NAME.canary/` and their record in `NAME.canary.json`."""
        self._state(name)
        canary_spec = self.canary_spec(name, version)
        if canary_spec is None:
            return [r for r in self.replicas(name) if r.role == CANARY]
        key = self.store.canary_key(name)
        config_dir = self.store.config_dir(key)
        started: list[dict[str, Any]] = []
        try:
            for index in range(count):
                grpc_port, rest_port = free_port(), free_port()
                plan = build_plan([canary_spec], config_dir=str(config_dir), grpc_port=grpc_port, rest_port=rest_port)
                write_files_atomic(config_dir, plan.files)
                replica = self._start_replica(key, index, plan.args, "127.0.0.1", plan.env)
                replica.update(grpc_port=grpc_port, rest_port=rest_port)
                started.append(replica)
            for replica in started:
                self._wait(key, replica, {name: [version]}, canary_spec, None)
        except BaseException:
            self._terminate(started)
            raise
        replicas = [{k: v for k, v in r.items() if not k.startswith("_")} for r in started]
        self.store.save_canary(name, {"name": key, "runtime": "local-canary", "version": version,
                                      "replicas": replicas})
        return [r for r in self.replicas(name) if r.role == CANARY]

    def canary_alive(self, name: str) -> bool:
        canary = self.store.load_canary(name)
        return bool(canary and canary.get("replicas")) and all(
            self._alive(r) for r in canary["replicas"])  # type: ignore[index]

    def remove_canary(self, name: str) -> None:
        canary = self.store.load_canary(name)
        if canary:
            self._terminate(canary["replicas"])
            self.store.delete_canary(name)

    def _start_router(self, name: str, spec: Spec, replicas: Sequence[dict[str, Any]],
                      wanted: Mapping[str, list[int]]) -> dict[str, Any]:
        router = self.router(name)
        config = RouterConfig(
            name=name, model=spec.name, rest_port=spec.ports.rest, grpc_port=spec.ports.grpc,
            bind_host=spec.ports.host,
            stable=tuple(Upstream(grpc_port=r["grpc_port"], rest_port=r["rest_port"]) for r in replicas),
            stable_version=max(wanted.get(spec.name) or [0]) or None,
            # HAProxy's Prometheus exporter, when this build has it (Debian's and the official do).
            metrics_port=free_port("127.0.0.1") if supports_prometheus(router.binary) else 0,
        )
        pid = router.start(config)
        wait_until_routed(router, len(replicas), deadline_s=spec.health.deadline_s)
        return {"pid": pid, "folder": str(router.folder), "rest_port": spec.ports.rest,
                "grpc_port": spec.ports.grpc, "metrics_port": config.metrics_port}

    def _apply_config(self, name: str, state: dict[str, Any], files: Mapping[str, str],
                      wanted: dict[str, list[int]], specs: Sequence[Spec], on_poll: OnPoll | None) -> Deployment:
        """Same flags: hot-reload a changed models.config (labels on versions not yet AVAILABLE
        in a second reload, `plan.plan_safe_reload`); on failure put the old one back."""
        spec = specs[0]
        def outcome(action: str, note: str = "") -> Deployment:
            return Deployment(name, self.name, action, state["rest_url"], state["grpc_address"],
                              state["replicas"], note)

        if state.get("config_hash") == digest(files):
            return outcome("unchanged")
        config_dir = Path(state["config_dir"])
        previous = {p.name: p.read_text() for p in config_dir.glob("*") if not p.name.startswith(".")}
        write_files_atomic(config_dir, files)
        reloaded: list[dict[str, Any]] = []
        try:
            for replica in state["replicas"]:
                reloaded.append(replica)  # before: a refused reload may have applied part of it
                target = Replica(f"{name}-{replica['index']}", STABLE, None, "127.0.0.1", replica["rest_port"],
                                 replica["grpc_port"])
                available = {s.name: model_status(target.rest_url, s.name).available() for s in specs}
                steps = plan_safe_reload(specs, available, wanted, final=files[MODELS_CONFIG])
                self.apply_label_steps(name, steps, spec=spec, replicas=[target], on_poll=on_poll)
        except BaseException:
            write_files_atomic(config_dir, previous)
            for replica in reloaded:
                with contextlib.suppress(RuntimeFailure):
                    reload_config(f"127.0.0.1:{replica['grpc_port']}", previous[MODELS_CONFIG])
            raise
        state["config_hash"] = digest(files)
        self.store.save(name, state)
        if state.get("router") and wanted.get(spec.name):
            # The router's checks follow the newest wanted version, now AVAILABLE everywhere.
            self.router(name).set_stable_version(max(wanted[spec.name]))
        return outcome("reloaded")

    def status(self, name: str) -> list[ReplicaStatus]:
        state = self._state(name)
        result = []
        for r in state["replicas"]:
            alive = process_alive(r["pid"], r.get("start_ticks"))
            if not alive:
                result.append(ReplicaStatus(r["index"], str(r["pid"]), False, r["grpc_port"], r["rest_port"],
                                            detail="process exited; `tfsctl logs` shows why"))
                continue
            models = tuple(model_status(f"http://127.0.0.1:{r['rest_port']}", m) for m in state["models"])
            result.append(ReplicaStatus(r["index"], str(r["pid"]), True, r["grpc_port"], r["rest_port"], models))
        router = state.get("router")
        if router and not self.router(name).running():
            # Index -1 is the router, as under the Docker runtime: down means nothing is reachable.
            result.append(ReplicaStatus(-1, "router", False, router["grpc_port"], router["rest_port"],
                                        detail="router (HAProxy) exited; `tfsctl deploy` starts it again"))
        return result

    def logs(self, name: str, *, tail: int = 100) -> dict[int, str]:
        state = self._state(name)
        logs = {r["index"]: self._tail(name, r["index"], tail) for r in state["replicas"]}
        if state.get("router"):
            path = self.router(name).log_path
            text = path.read_text(errors="replace") if path.exists() else ""
            logs[-1] = "\n".join(text.splitlines()[-tail:])
        return logs

    def stop(self, name: str) -> list[str]:
        state = self._state(name)
        if state.get("router"):
            self.router(name).stop()
        self._terminate(state["replicas"])
        self.store.delete(name)
        return [str(r["pid"]) for r in state["replicas"]]

    def _state(self, name: str) -> dict[str, Any]:
        state = self.store.load(name)
        if state is None or state.get("runtime") != self.name:
            known = ", ".join(self.store.names()) or "none"
            raise RuntimeFailure(
                f"no local deployment named {name!r} (deployments: {known})",
                fix=f"deploy it with `tfsctl deploy {name}`",
            )
        return state
