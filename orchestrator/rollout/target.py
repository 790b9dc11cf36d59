"""What a rollout drives: the stable deployment, its canary replicas and the router's weights.

`RolloutTarget` is the narrow interface the manager sees (as Flagger sees routers and metric
providers); `LocalTarget` realises it on the local runtime (canary replicas as processes),
`DockerTarget` on the Docker runtime (canary containers). Both drive the deployment's HAProxy
through its runtime API and read the same metrics, so only starting, watching, promoting and
removing the canary differ. Tests and other runtimes bring their own implementation through
the constructor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.errors import RolloutError, RuntimeError_
from orchestrator.rollout.analysis import Window
from orchestrator.rollout.metrics import Snapshot, scrape, total
from orchestrator.spec import Spec, VersionPolicy, pin_spec_file


class RolloutTarget(ABC):
    @abstractmethod
    def start_canary(self, version: int) -> None: ...

    @abstractmethod
    def canary_alive(self) -> bool: ...

    @abstractmethod
    def set_weight(self, percent: int) -> None: ...

    @abstractmethod
    def sample(self) -> dict[str, Snapshot]:
        """Cumulative counters for `stable` and `canary` right now."""

    @abstractmethod
    def promote(self, version: int) -> None:
        """Stable replicas hot-reload `version` (label-safe), and the spec says so."""

    @abstractmethod
    def remove_canary(self) -> None: ...


def _refresh_monitor(store: Any, name: str) -> None:
    """A running `tfsctl monitor` scrapes the canary from the moment it exists until it is gone."""
    from orchestrator.monitor.server import refresh_targets

    refresh_targets(store, name)


def window(after: Snapshot, before: Snapshot) -> Window:
    diff = after - before
    return Window(int(diff.requests), int(diff.errors), diff.quantile_ms(0.99), after.source)


ROUTER_SOURCE = "router (HAProxy) counters"


def pick_counters(prom: list[Snapshot | None], router: Snapshot) -> Snapshot:
    """Requests and errors from ONE source: TF Serving's when every replica answered its scrape
    (it sees gRPC errors, which travel as HTTP 200), else the router's. Latency is TF Serving's."""
    answered = [p for p in prom if p is not None]
    merged = total(answered)
    if prom and len(answered) == len(prom):
        return merged
    return Snapshot(router.requests, router.errors, merged.buckets, ROUTER_SOURCE)


class RoutedTarget(RolloutTarget):
    """What every target behind an HAProxy router shares: routing, weights and sampling.

    Subclasses set `spec`, `name`, `state` (the deployment's) and `router`, and say where the
    canary's replicas listen (`_canary_replicas`).
    """

    spec: Spec
    name: str
    state: dict[str, Any]
    router: Any  # HAProxyRouter (or the Docker runtime's subclass)

    def _canary_replicas(self) -> Sequence[dict[str, Any]]:
        raise NotImplementedError

    def _route_canary(self, replicas: Sequence[dict[str, Any]], version: int) -> None:
        from orchestrator.router.haproxy import Upstream

        self.router.set_canary([Upstream(grpc_port=r["grpc_port"], rest_port=r["rest_port"]) for r in replicas],
                               version)
        self._wait_canary_up(len(replicas))

    def _wait_canary_up(self, n: int, deadline_s: float = 30.0) -> None:
        import time

        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            states = self.router.server_states()
            if sum(1 for k, v in states.items() if "/canary" in k and v.startswith("UP")) >= 2 * n:
                return
            time.sleep(0.05)
        raise RuntimeError_(
            f"the router's checks never saw the canary UP within {deadline_s:g} s: {dict(states)}",
            fix=f"read the canary's log (local: .tfso/deployments/{self.name}.canary/logs/; docker: "
            f"`docker logs` of the containers labelled io.tfso.role=canary) and the router's "
            f"({self.router.log_path})")

    def set_weight(self, percent: int) -> None:
        self.router.set_weight(percent)

    def sample(self) -> dict[str, Snapshot]:
        import requests

        path = self.spec.monitoring.path
        router = self.router.counters()
        with requests.Session() as session:
            stable_prom = [scrape(f"http://127.0.0.1:{r['rest_port']}", self.name, path, session=session)
                           for r in self.state["replicas"]]
            canary_prom = [scrape(f"http://127.0.0.1:{r['rest_port']}", self.name, path, session=session)
                           for r in self._canary_replicas()]
        return {
            "stable": pick_counters(stable_prom, _as_snapshot(router["stable"])),
            "canary": pick_counters(canary_prom, _as_snapshot(router["canary"])),
        }


def _as_snapshot(counters: Any) -> Snapshot:
    return Snapshot(float(counters.requests), float(counters.errors))


class LocalTarget(RoutedTarget):
    """Canary replicas as local server processes behind the deployment's HAProxy router."""

    def __init__(self, spec: Spec, canary_replicas: int = 1) -> None:
        from orchestrator.runtime.local import LocalRuntime

        self.spec = spec
        self.runtime = LocalRuntime()
        self.name = spec.name
        self.canary_key = f"{spec.name}.canary"
        self.canary_replicas = canary_replicas
        state = self.runtime.store.load(self.name)
        if state is None or state.get("runtime") != "local":
            raise RolloutError(f"no local deployment named {self.name!r}",
                               fix=f"deploy it first: `tfsctl deploy {self.name}` (with `router: true`)")
        if not state.get("router"):
            raise RolloutError(f"{self.name} has no router, so traffic cannot be split",
                               fix=f"add `router: true` to {spec.source or 'the spec'} and `tfsctl deploy {self.name}`")
        self.state = state
        self.router = self.runtime.router(self.name)

    # -- canary processes -----------------------------------------------------------------

    def _canary_state(self) -> dict[str, Any] | None:
        return self.runtime.store.load(self.canary_key)

    def start_canary(self, version: int) -> None:
        from orchestrator.plan import build_plan
        from orchestrator.runtime.base import free_port
        from orchestrator.state import write_files_atomic

        existing = self._canary_state()
        if existing and all(self.runtime._alive(r) for r in existing["replicas"]):
            self._route_canary(existing["replicas"], version)
            return
        self.remove_canary()
        canary_spec = self.spec.model_copy(update={
            "version_policy": VersionPolicy(kind="specific", versions=(version,)), "version_labels": {}})
        config_dir = self.runtime.store.folder(self.canary_key) / "config"
        started: list[dict[str, Any]] = []
        try:
            for index in range(self.canary_replicas):
                grpc_port, rest_port = free_port(), free_port()
                plan = build_plan([canary_spec], config_dir=str(config_dir), grpc_port=grpc_port, rest_port=rest_port)
                write_files_atomic(config_dir, plan.files)
                replica = self.runtime._start_replica(self.canary_key, index, plan.args, "127.0.0.1")
                replica.update(grpc_port=grpc_port, rest_port=rest_port)
                started.append(replica)
            for replica in started:
                self.runtime._wait(self.canary_key, replica, {self.name: [version]}, canary_spec, None)
        except BaseException:
            self.runtime._terminate(started)
            raise
        replicas = [{k: v for k, v in r.items() if not k.startswith("_")} for r in started]
        self.runtime.store.save(self.canary_key, {"name": self.canary_key, "runtime": "local-canary",
                                                   "version": version, "replicas": replicas})
        _refresh_monitor(self.runtime.store, self.name)
        self._route_canary(replicas, version)

    def _canary_replicas(self) -> Sequence[dict[str, Any]]:
        return (self._canary_state() or {}).get("replicas", [])

    def canary_alive(self) -> bool:
        state = self._canary_state()
        return bool(state) and all(self.runtime._alive(r) for r in state["replicas"])  # type: ignore[index]

    def promote(self, version: int) -> None:
        from orchestrator.plan import model_config, models_config_text
        from orchestrator.runtime.base import reload_config
        from orchestrator.spec import load_spec

        current = list(self.spec.version_policy.select(self.spec.wanted_versions()))
        wanted = sorted(set(current) | {version})
        # Step 1: load the new version beside the old one, labels untouched (TF Serving's rule:
        # a label may only point at an AVAILABLE version). The router still sends traffic.
        step1 = models_config_text([model_config(self.spec, versions=wanted)])
        for replica in self.state["replicas"]:
            reload_config(f"127.0.0.1:{replica['grpc_port']}", step1)
            self.runtime._wait(self.name, replica, {self.name: [version]}, self.spec, None)
        # The router's checks now ask for the new version, AVAILABLE beside the old one.
        self.router.set_stable_version(version)
        # Step 2: the spec pins the new version and labels follow it; deploy hot-reloads.
        labels = {k: (version if v in current else v) for k, v in self.spec.version_labels.items()}
        if self.spec.source is None:
            raise RolloutError("the spec has no file to pin the promoted version in")
        pin_spec_file(Path(self.spec.source), version, labels)
        promoted = load_spec(str(self.spec.source))
        self.runtime.deploy([promoted])
        self.spec = promoted

    def remove_canary(self) -> None:
        try:
            self.router.drain_canary()
        except RuntimeError_:
            pass  # no router answering: nothing to drain
        state = self._canary_state()
        if state:
            self.runtime._terminate(state["replicas"])
            self.runtime.store.delete(self.canary_key)
            _refresh_monitor(self.runtime.store, self.name)


class DockerTarget(RoutedTarget):
    """Canary containers behind the deployment's HAProxy container (the Docker runtime).

    The canary serves only the new version from the stable replicas' image and mounts, on
    127.0.0.1-published ports, labelled as the deployment's with `io.tfso.role=canary` (so
    `tfsctl stop` and `abort` find it even if the controller died before recording it); its
    state is `.tfso/deployments/NAME.canary.json`. Promotion is the runtime's own hot reload:
    the new version loads beside the old on every stable container, then the pinned spec is
    re-applied (labels move in TF Serving's two steps); no container restarts.
    """

    def __init__(self, spec: Spec, canary_replicas: int = 1, *, runtime: Any = None) -> None:
        from orchestrator.runtime.docker import DockerRuntime

        self.spec = spec
        self.runtime = runtime or DockerRuntime()
        self.name = spec.name
        self.canary_replicas = canary_replicas
        state = self.runtime.store.load(self.name)
        if state is None or state.get("runtime") != "docker":
            raise RolloutError(f"no docker deployment named {self.name!r}",
                               fix=f"deploy it first: `tfsctl deploy {self.name} --runtime docker` "
                               "(with `router: true`)")
        if not state.get("router"):
            raise RolloutError(f"{self.name} has no router, so traffic cannot be split",
                               fix=f"add `router: true` to {spec.source or 'the spec'} and `tfsctl deploy {self.name}`")
        self.state = state
        self.router = self.runtime.router(self.name)

    def _canary_state(self) -> dict[str, Any] | None:
        from orchestrator.runtime.docker import canary_key

        return self.runtime.store.load(canary_key(self.name))

    def _canary_replicas(self) -> Sequence[dict[str, Any]]:
        return (self._canary_state() or {}).get("replicas", [])

    def start_canary(self, version: int) -> None:
        existing = self._canary_state()
        if existing and existing.get("version") == version and self.runtime.canary_alive(self.name):
            self._route_canary(existing["replicas"], version)
            return
        self.remove_canary()
        self._route_canary(self.runtime.start_canary(self.spec, version, self.canary_replicas), version)

    def canary_alive(self) -> bool:
        return bool(self.runtime.canary_alive(self.name))

    def promote(self, version: int) -> None:
        from orchestrator.plan import container_model_path, model_config, models_config_text
        from orchestrator.runtime.base import reload_config
        from orchestrator.spec import load_spec

        if self.spec.source is None:
            raise RolloutError("the spec has no file to pin the promoted version in")
        others = [s for s in (load_spec(p) for p in self.state.get("specs", [])) if s.name != self.name]
        current = list(self.spec.version_policy.select(self.spec.wanted_versions()))
        # Step 1: every stable container loads the new version beside the old one, labels
        # untouched (a label may only point at an AVAILABLE version); traffic keeps flowing.
        step1 = models_config_text([model_config(self.spec, container_model_path,
                                                 versions=sorted(set(current) | {version}))]
                                   + [model_config(s, container_model_path) for s in others])
        for replica in self.state["replicas"]:
            reload_config(f"127.0.0.1:{replica['grpc_port']}", step1)
            self.runtime._wait(self.name, self.runtime.api.inspect(replica["id"]), {self.name: [version]},
                               self.spec.health, None, "127.0.0.1")
        # The router's checks now ask for the new version, AVAILABLE beside the old one.
        self.router.set_stable_version(version)
        # Step 2: the spec pins the new version and labels follow it; the runtime hot-reloads.
        labels = {k: (version if v in current else v) for k, v in self.spec.version_labels.items()}
        pin_spec_file(Path(self.spec.source), version, labels)
        promoted = load_spec(str(self.spec.source))
        self.runtime.reload([promoted, *others])
        self.spec = promoted
        self.state = self.runtime.store.load(self.name) or self.state

    def remove_canary(self) -> None:
        try:
            self.router.drain_canary()
        except RuntimeError_:
            pass  # no router answering: nothing to drain
        self.runtime.remove_canary(self.name)
