"""The Docker runtime's convergence: bring the containers to the specs, driven by the Docker SDK.

The runtime only ever touches containers it finds by our labels (`templates`), so a container
it did not create (or one `tfsctl compose` made, labelled `managed-by=compose`) is never stopped.

Deploy is idempotent, like the local runtime's: same spec, nothing happens; a changed
models.config is rewritten atomically and hot-reloaded into the running containers (same id,
same start time); a changed container (image, flags, mounts, resources, ports) replaces the
replicas one at a time, stopping the old one only when its successor is about to start and
starting it again if the successor does not become healthy. The router container is
`router.DockerHAProxyRouter`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.errors import HealthTimeout, RuntimeFailure
from orchestrator.health import model_status, wait_until_available
from orchestrator.plan import MODELS_CONFIG, Plan, container_model_path, plan_safe_reload
from orchestrator.router.capture import SPOE_FILE, CaptureConfig, CaptureModel
from orchestrator.router.haproxy import RouterConfig, Upstream, wait_until_routed
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
from orchestrator.runtime.docker.api import (
    ContainerInfo,
    ContainerRequest,
    DockerApi,
    DockerError,
    GpuUnavailable,
    ImageMissing,
    Mount,
)
from orchestrator.runtime.docker.router import DockerHAProxyRouter, router_settings
from orchestrator.runtime.docker.templates import (
    GRPC_INSIDE,
    LABEL_CANARY,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    LABEL_REPLICA,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    MANAGER,
    REST_INSIDE,
    ROLE_CANARY,
    container_plan,
    container_template,
    effective_specs,
    replica_request,
    template_hash,
)
from orchestrator.spec import Health, Spec
from orchestrator.state import StateStore, write_files_atomic

STOP_TIMEOUT_S = 10.0
CAPTURE_INDEX = -2  # the capture agent's row in `status` (the router's is -1)


def two_free_ports(host: str) -> tuple[int, int]:
    """Host ports for a replica after the first (gRPC, REST), never the same twice."""
    grpc = free_port(host)
    rest = free_port(host)
    while rest == grpc:
        rest = free_port(host)
    return grpc, rest


def _replica_host(spec: Spec) -> str:
    """Where replicas publish their ports: loopback behind a router, else the spec's host."""
    return "127.0.0.1" if spec.router else spec.ports.host


def _replica_ports(spec: Spec, index: int, old: tuple[int, int] | None = None) -> tuple[int, int]:
    """Host ports (gRPC, REST) for replica `index`.

    Replica 0 takes the spec's ports unless a router owns them; a replaced replica keeps the
    ports it had (unless they are now the router's); any other gets two free ones.
    """
    if index == 0 and not spec.router:
        return spec.ports.grpc, spec.ports.rest
    if old and all(old) and not (spec.router and {spec.ports.grpc, spec.ports.rest} & set(old)):
        return old
    return two_free_ports(_replica_host(spec))


def container_name(deployment: str, index: int) -> str:
    return f"tfso-{deployment}-{index}-{secrets.token_hex(3)}"


# ---------------------------------------------------------------------------------------------
# Probes


def docker_usable(spec: Spec, *, api_factory: Any = None) -> tuple[bool, str]:
    """For `runtime: auto`: docker when a daemon answers and the image is present, and why."""
    ref = spec.image_ref
    try:
        api = (api_factory or (lambda: DockerApi(timeout_s=3.0)))()
    except DockerError as exc:
        return False, exc.message.split(" (", 1)[0]
    try:
        version = api.version()
        if api.image_present(ref):
            return True, f"Docker {version} answers and image {ref} is present"
        return False, (f"Docker {version} answers but image {ref} is not present "
                       f"(`docker pull {ref}`, or `--runtime docker` to pull it)")
    except DockerError as exc:
        return False, exc.message.split(" (", 1)[0]
    finally:
        with contextlib.suppress(Exception):
            api.close()


def _endpoint_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1", "") else host


# ---------------------------------------------------------------------------------------------
# The runtime


class DockerRuntime(Runtime):
    name = "docker"
    host_mounts: tuple[Mount, ...] = ()
    """Host folders mounted read-only into every container this runtime creates (replicas,
    canaries, the router). None in production: no spec can ask for one. The test suite's
    stand-in images run on the host's Python and set them (tests/helpers/standin_tfsctl.py)."""

    def __init__(self, store: StateStore | None = None, *, api: Any = None,
                 stop_timeout_s: float = STOP_TIMEOUT_S, host_mounts: Sequence[Mount] | None = None) -> None:
        self.store = store or StateStore()
        if host_mounts is not None:
            self.host_mounts = tuple(host_mounts)
        self._api_given = api
        self._api: Any = api
        self.stop_timeout_s = stop_timeout_s

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = DockerApi()
        return self._api

    # -- finding our containers ------------------------------------------------------------

    def containers(self, name: str) -> list[ContainerInfo]:
        """Every container of deployment `name` that carries our labels (running or not)."""
        found = self.api.list({LABEL_MANAGED_BY: MANAGER, LABEL_DEPLOYMENT: name})
        return sorted((c for c in found if self._ours(c, name)),
                      key=lambda c: (int(c.labels.get(LABEL_REPLICA, "0")), c.started_at))

    @staticmethod
    def _ours(container: ContainerInfo, name: str) -> bool:
        labels = container.labels
        return (labels.get(LABEL_MANAGED_BY) == MANAGER and labels.get(LABEL_DEPLOYMENT) == name
                and labels.get(LABEL_REPLICA, "").isdigit())

    def _by_index(self, name: str) -> tuple[dict[int, ContainerInfo], list[ContainerInfo]]:
        """Replica index -> container; duplicates of an index (a crash mid-replace) come apart."""
        by_index: dict[int, ContainerInfo] = {}
        extra: list[ContainerInfo] = []
        for c in self.containers(name):
            index = int(c.labels[LABEL_REPLICA])
            current = by_index.get(index)
            if current is None or (c.running and not current.running):
                if current is not None:
                    extra.append(current)
                by_index[index] = c
            else:
                extra.append(c)
        return by_index, extra

    # -- images ----------------------------------------------------------------------------

    def _ensure_image(self, spec: Spec, ref: str) -> None:
        """Compose's pull policies: `missing` pulls when absent, `always` pulls, `never` never."""
        policy = spec.pull
        present = self.api.image_present(ref)
        if policy == "never" and not present:
            raise ImageMissing(ref, why="and the pull policy is never")
        if policy == "always" or not present:
            try:
                self.api.pull(ref)
            except DockerError as exc:
                raise ImageMissing(ref, why=f"pull policy {policy}, and the pull failed: "
                                   f"{exc.message}") from exc

    # -- one replica -----------------------------------------------------------------------

    def _logs(self, container_id: str, tail: int = 30) -> str:
        try:
            return str(self.api.logs(container_id, tail=tail))
        except DockerError as exc:
            return f"(no logs: {exc.message})"

    def _remove(self, container: ContainerInfo | str) -> None:
        cid = container if isinstance(container, str) else container.id
        with contextlib.suppress(DockerError):
            self.api.remove(cid)

    def _start_replica(self, template: ContainerRequest, *, deployment: str, index: int,
                       host: str, grpc_port: int, rest_port: int, spec_hash: str) -> ContainerInfo:
        request = replica_request(template, name=container_name(deployment, index), index=index,
                                  host=host, grpc_port=grpc_port, rest_port=rest_port,
                                  spec_hash=spec_hash)
        cid = self.api.create(request)
        try:
            self.api.start(cid, name=request.name)
        except GpuUnavailable as exc:
            self._remove(cid)
            raise GpuUnavailable(
                f"cannot deploy {deployment} on GPU: {exc.message.split(': ', 1)[-1]}; "
                f"requested image {template.image} with GPUs {template.gpus}", fix=exc.fix
            ) from exc
        except DockerError:
            self._remove(cid)
            raise
        return self.api.inspect(cid)

    def _wait(self, deployment: str, container: ContainerInfo, wanted: Mapping[str, list[int]],
              health: Health, on_poll: OnPoll | None, host: str) -> None:
        rest_port = container.ports[REST_INSIDE][1]
        first_restarts = container.restart_count

        def exited() -> str | None:
            try:
                now = self.api.inspect(container.id)
            except DockerError as exc:
                return f"container {container.name} vanished ({exc.message})"
            if now.status in ("exited", "dead"):
                return f"container {container.name} {now.describe()}"
            if now.restart_count > first_restarts or now.status == "restarting":
                return (f"container {container.name} keeps exiting (restarted "
                        f"{now.restart_count - first_restarts} time(s), last exit code {now.exit_code})")
            return None

        result = wait_until_available(
            f"http://{_endpoint_host(host)}:{rest_port}",
            wanted,
            deadline_s=health.deadline_s,
            poll_interval_s=health.poll_interval_s,
            on_poll=on_poll,
            should_abort=exited,
        )
        if result.ready:
            return
        logs = self._logs(container.id)
        if result.failed:
            raise RuntimeFailure(f"{deployment}: a version failed to load in {container.name} "
                                 f"({result.detail})",
                                 fix="fix or re-export that version; what served before still serves",
                                 logs=logs)
        if reason := exited():
            raise RuntimeFailure(f"{deployment}: {reason} before every wanted version was AVAILABLE",
                                 fix="its last log lines are below; fix the model, the spec or "
                                 "the image (`tfsctl render` shows the flags it was given)",
                                 logs=logs)
        raise HealthTimeout(
            f"{deployment}: {container.name} not AVAILABLE after {health.deadline_s:g} s "
            f"({result.detail})",
            fix=f"raise health.deadline_s for big models, or read `tfsctl logs {deployment}`",
            logs=logs,
        )

    # -- deploy ----------------------------------------------------------------------------

    def deploy(self, specs: Sequence[Spec], *, on_poll: OnPoll | None = None) -> Deployment:
        specs = effective_specs(specs)
        main = specs[0]
        name = main.name
        logged = [s.name for s in specs if s.logging is not None]
        if logged and not main.router:  # tensorflow/serving cannot log: the router captures
            raise RuntimeFailure(
                f"{name}: payload logging (`logging:` of {', '.join(logged)}) under the docker "
                "runtime is done by the router, and this spec has no router",
                fix="add `router: true` to the spec (the router captures the sampled requests), "
                "or deploy with --runtime local",
            )
        state = self.store.load(name)
        if state is not None and state.get("runtime") != self.name:
            raise RuntimeFailure(
                f"{name} is deployed with the {state.get('runtime')} runtime",
                fix=f"stop it first (`tfsctl stop {name}`), then deploy with --runtime docker",
            )
        config_dir = self.store.config_dir(name)
        plan = container_plan(specs)
        wanted = wanted_versions(specs)
        template = container_template(specs, config_dir, plan=plan, host_mounts=self.host_mounts)
        spec_hash = template_hash(template, main)
        self._ensure_image(main, template.image)
        if main.router:
            self._ensure_image(main, main.router_image)
        config_hash = digest(plan.files)

        by_index, extra = self._by_index(name)
        for c in extra:
            self._remove(c)
        if not by_index or (state and state.get("router") and not main.router):
            # No replica left (a router alone would hold the spec's ports), or the router goes
            # and replica 0 moves back onto its ports.
            self.router(name).stop()
        if not by_index:
            return self._create(specs, plan, template, spec_hash, config_hash, wanted, on_poll,
                                note="" if state is None else "no container was left; created again")
        return self._converge(specs, plan, template, spec_hash, config_hash, wanted, by_index,
                              state or {}, on_poll)

    def _save(self, specs: Sequence[Spec], template: ContainerRequest, spec_hash: str,
              config_hash: str, wanted: Mapping[str, list[int]], replicas: Sequence[ContainerInfo],
              created_at: float | None = None, router: Mapping[str, Any] | None = None) -> dict[str, Any]:
        main = specs[0]
        host = _endpoint_host(main.ports.host)
        first = min(replicas, key=lambda c: int(c.labels[LABEL_REPLICA]))
        # Behind a router the deployment answers on the router's ports (the spec's).
        rest_port = main.ports.rest if router else first.ports[REST_INSIDE][1]
        grpc_port = main.ports.grpc if router else first.ports[GRPC_INSIDE][1]
        state = {
            "name": main.name,
            "runtime": self.name,
            "models": [s.name for s in specs],
            "specs": [str(s.source) for s in specs if s.source],
            "image": template.image,
            "image_fields": {"image": main.image, "tag": main.tag, "pull": main.pull},
            "spec_hash": spec_hash,
            "config_hash": config_hash,
            "config_dir": str(self.store.config_dir(main.name)),
            "host": _replica_host(main),
            "rest_url": f"http://{host}:{rest_port}",
            "grpc_address": f"{host}:{grpc_port}",
            "wanted": {k: list(v) for k, v in wanted.items()},
            "health": main.health.model_dump(),
            "template": template.to_json(),
            "created_at": created_at or time.time(),
            "replicas": [self._replica_json(c) for c in sorted(
                replicas, key=lambda c: int(c.labels[LABEL_REPLICA]))],
            "router": dict(router) if router else None,
        }
        self.store.save(main.name, state)
        return state

    @staticmethod
    def _replica_json(c: ContainerInfo) -> dict[str, Any]:
        return {"index": int(c.labels[LABEL_REPLICA]), "id": c.id, "name": c.name,
                "grpc_port": c.ports[GRPC_INSIDE][1], "rest_port": c.ports[REST_INSIDE][1],
                "spec_hash": c.labels.get(LABEL_SPEC_HASH, ""), "started_at": c.started_at}

    def _outcome(self, state: Mapping[str, Any], action: str, note: str = "") -> Deployment:
        return Deployment(state["name"], self.name, action, state["rest_url"], state["grpc_address"],
                          state["replicas"], note)

    def _write_config(self, config_dir: Path, files: Mapping[str, str]) -> dict[str, str]:
        """Write the plan's files atomically; returns the previous ones (for a rollback)."""
        previous = ({p.name: p.read_text() for p in config_dir.glob("*") if not p.name.startswith(".")}
                    if config_dir.is_dir() else {})
        write_files_atomic(config_dir, files)
        for stale in set(previous) - set(files):
            (config_dir / stale).unlink(missing_ok=True)
        return previous

    def _restore_config(self, config_dir: Path, previous: Mapping[str, str]) -> None:
        if not previous:
            return
        write_files_atomic(config_dir, previous)
        for p in config_dir.glob("*"):
            if not p.name.startswith(".") and p.name not in previous:
                p.unlink(missing_ok=True)

    def _create(self, specs: Sequence[Spec], plan: Plan, template: ContainerRequest, spec_hash: str,
                config_hash: str, wanted: Mapping[str, list[int]], on_poll: OnPoll | None,
                note: str = "") -> Deployment:
        main = specs[0]
        name, host = main.name, _replica_host(main)
        check_ports_free(name, main.ports.host, {"gRPC": main.ports.grpc, "REST": main.ports.rest})
        self._write_config(self.store.config_dir(name), plan.files)
        started: list[ContainerInfo] = []
        router = None
        try:
            for index in range(main.replicas):
                grpc_port, rest_port = _replica_ports(main, index)
                started.append(self._start_replica(template, deployment=name, index=index, host=host,
                                                   grpc_port=grpc_port, rest_port=rest_port,
                                                   spec_hash=spec_hash))
            for container in started:
                self._wait(name, container, wanted, main.health, on_poll, host)
            if main.router:
                router, _ = self._ensure_router(name, router_settings(main, self.host_mounts, specs), started,
                                                 main.health, wanted)
        except BaseException:
            for container in started:
                self._remove(container)
            raise
        state = self._save(specs, template, spec_hash, config_hash, wanted, started, router=router)
        return self._outcome(state, "created", note)

    def _converge(self, specs: Sequence[Spec], plan: Plan, template: ContainerRequest,
                  spec_hash: str, config_hash: str, wanted: Mapping[str, list[int]],
                  by_index: dict[int, ContainerInfo], state: Mapping[str, Any],
                  on_poll: OnPoll | None) -> Deployment:
        """Bring existing replicas to the spec: reload, replace, restart, scale — in that order."""
        main = specs[0]
        name, host = main.name, _replica_host(main)
        config_dir = self.store.config_dir(name)
        notes: list[str] = []
        actions: list[str] = []
        keep = {i: c for i, c in by_index.items()
                if i < main.replicas and c.running and c.labels.get(LABEL_SPEC_HASH) == spec_hash}
        replace = {i: c for i, c in by_index.items() if i < main.replicas and i not in keep}
        surplus = [c for i, c in by_index.items() if i >= main.replicas]
        missing = [i for i in range(main.replicas) if i not in by_index]

        config_changed = state.get("config_hash") != config_hash or not (config_dir / MODELS_CONFIG).is_file()
        previous = self._write_config(config_dir, plan.files)
        reloaded: list[ContainerInfo] = []
        try:
            if config_changed:
                for container in keep.values():
                    reloaded.append(container)
                    self._hot_reload(name, specs, container, plan, wanted, main.health, on_poll, host)
                if keep:
                    actions.append("reloaded")
        except BaseException:
            self._restore_config(config_dir, previous)
            for container in reloaded:
                with contextlib.suppress(RuntimeFailure):
                    reload_config(f"{_endpoint_host(host)}:{container.ports[GRPC_INSIDE][1]}",
                                  previous.get(MODELS_CONFIG, ""))
            raise

        current = dict(keep)
        for index, old in sorted(replace.items()):
            why = ("container changed" if old.labels.get(LABEL_SPEC_HASH) != spec_hash
                   else f"it had {old.describe()}")
            new = self._replace(name, index, old, template, spec_hash, wanted, main, on_poll,
                                restore_config=None if reloaded or "replaced" in actions
                                else (config_dir, previous))
            current[index] = new
            notes.append(f"replica {index} replaced ({why})")
            if "replaced" not in actions:
                actions.append("replaced")

        for container in sorted(surplus, key=lambda c: -int(c.labels[LABEL_REPLICA])):
            self._stop_and_remove(container)
            notes.append(f"replica {container.labels[LABEL_REPLICA]} removed (scaled down)")
        created: list[ContainerInfo] = []
        try:
            for index in missing:
                if index == 0 and not main.router:
                    check_ports_free(name, host, {"gRPC": main.ports.grpc, "REST": main.ports.rest})
                ports = _replica_ports(main, index)
                created.append(self._start_replica(template, deployment=name, index=index, host=host,
                                                   grpc_port=ports[0], rest_port=ports[1],
                                                   spec_hash=spec_hash))
            for container in created:
                self._wait(name, container, wanted, main.health, on_poll, host)
        except BaseException:
            for container in created:
                self._remove(container)
            raise
        for container in created:
            current[int(container.labels[LABEL_REPLICA])] = container
        if missing:
            notes.append(f"replica(s) {', '.join(map(str, missing))} added")
        if surplus or missing:
            actions.append("scaled")

        refreshed = [self.api.inspect(c.id) for _, c in sorted(current.items())]
        router = (state.get("router") or router_settings(main, self.host_mounts, specs)) if main.router else None
        saved = self._save(specs, template, spec_hash, config_hash, wanted, refreshed,
                           created_at=state.get("created_at"), router=router)
        if main.router:
            router, started = self._ensure_router(name, router_settings(main, self.host_mounts, specs), refreshed,
                                                  main.health, wanted)
            saved = {**saved, "router": router}
            self.store.save(name, saved)
            if started:
                actions.append("router started")
        elif state.get("router"):
            actions.append("router removed")
        return self._outcome(saved, "+".join(actions) or "unchanged", "; ".join(notes))

    def _hot_reload(self, name: str, specs: Sequence[Spec], container: ContainerInfo, plan: Plan,
                    wanted: Mapping[str, list[int]], health: Health, on_poll: OnPoll | None,
                    host: str) -> None:
        """Reload the new models.config; labels on versions not yet AVAILABLE wait for a 2nd reload.

        TF Serving refuses a label on a version that is not AVAILABLE, so a config that loads a
        version and labels it at once goes in two reloads (`plan.plan_safe_reload`), applied by
        the one step-applier.
        """
        replica = Replica(container.name, STABLE, None, _endpoint_host(host), container.ports[REST_INSIDE][1],
                          container.ports[GRPC_INSIDE][1])
        available = {s.name: model_status(replica.rest_url, s.name).available() for s in specs}
        steps = plan_safe_reload(specs, available, wanted, model_path=container_model_path,
                                 final=plan.files[MODELS_CONFIG])
        self.apply_label_steps(name, steps, spec=specs[0].model_copy(update={"health": health}),
                               replicas=[replica], on_poll=on_poll)

    def _replace(self, name: str, index: int, old: ContainerInfo, template: ContainerRequest,
                 spec_hash: str, wanted: Mapping[str, list[int]], spec: Spec, on_poll: OnPoll | None,
                 restore_config: tuple[Path, Mapping[str, str]] | None) -> ContainerInfo:
        """Stop `old`, start its successor on the same host ports; on failure start `old` again."""
        host = _replica_host(spec)
        old_ports = (old.ports.get(GRPC_INSIDE, ("", 0))[1], old.ports.get(REST_INSIDE, ("", 0))[1])
        grpc_port, rest_port = _replica_ports(spec, index, old_ports)
        was_running = old.running
        if was_running:
            self.api.stop(old.id, timeout_s=self.stop_timeout_s)
        if (grpc_port, rest_port) != (old.ports.get(GRPC_INSIDE, ("", 0))[1],
                                      old.ports.get(REST_INSIDE, ("", 0))[1]):
            check_ports_free(name, host, {"gRPC": grpc_port, "REST": rest_port})
        new: ContainerInfo | None = None
        try:
            new = self._start_replica(template, deployment=name, index=index, host=host,
                                      grpc_port=grpc_port, rest_port=rest_port, spec_hash=spec_hash)
            self._wait(name, new, wanted, spec.health, on_poll, host)
        except BaseException:
            if new is not None:
                self._remove(new)
            if was_running:
                if restore_config is not None:
                    self._restore_config(*restore_config)
                with contextlib.suppress(DockerError):
                    self.api.start(old.id, name=old.name)
            raise
        self._remove(old)
        return new

    def _stop_and_remove(self, container: ContainerInfo) -> None:
        if container.running:
            with contextlib.suppress(DockerError):
                self.api.stop(container.id, timeout_s=self.stop_timeout_s)
        self._remove(container)

    # -- the router ------------------------------------------------------------------------

    def router(self, name: str, settings: Mapping[str, Any] | None = None) -> DockerHAProxyRouter:
        """The deployment's router (found by labels); `settings` as kept in state, default: state's."""
        if settings is None:
            settings = (self.store.load(name) or {}).get("router") or {}
        endpoint = ((_endpoint_host(settings.get("bind_host", "127.0.0.1")), settings["rest_port"],
                     settings["grpc_port"]) if "rest_port" in settings else None)
        return DockerHAProxyRouter(self.store.folder(name) / "router", self.api, name,
                                   image=settings.get("image", "haproxy:2.6"),
                                   mounts=settings.get("mounts", ()), endpoint=endpoint)

    def _ensure_router(self, name: str, settings: Mapping[str, Any], replicas: Sequence[ContainerInfo],
                       health: Health, wanted: Mapping[str, Sequence[int]]) -> tuple[dict[str, Any], bool]:
        """The router in front of `replicas`: kept when its config, image and mounts are the same,
        replaced otherwise; its checks ask for the newest wanted version, and it waits until they
        see every replica UP."""
        if not settings.get("metrics_port"):  # HAProxy's Prometheus exporter (`tfsctl monitor`)
            kept = ((self.store.load(name) or {}).get("router") or {}).get("metrics_port")
            settings = {**settings, "metrics_port": kept or free_port("127.0.0.1")}
        router = self.router(name, settings)
        settings, capture = self._ensure_capture(name, settings, router, health)
        config = RouterConfig(
            name=name, model=settings["model"], rest_port=settings["rest_port"],
            grpc_port=settings["grpc_port"], bind_host=settings["bind_host"],
            stable=tuple(Upstream(grpc_port=c.ports[GRPC_INSIDE][1], rest_port=c.ports[REST_INSIDE][1])
                         for c in sorted(replicas, key=lambda c: int(c.labels[LABEL_REPLICA]))),
            stable_version=max(wanted.get(settings["model"]) or [0]) or None,
            metrics_port=int(settings.get("metrics_port") or 0), capture=capture)
        current = router.container()
        started = not (current is not None and current.running
                       and current.labels.get(LABEL_SPEC_HASH) == router.config_hash(config))
        if started:
            router.start(config)
        elif config.stable_version is not None:
            router.set_stable_version(config.stable_version)
        wait_until_routed(router, len(replicas), deadline_s=health.deadline_s)
        now = router.container()
        return {**settings, "id": now.id if now else "", "container": now.name if now else "",
                "folder": str(router.folder)}, started

    def _ensure_capture(self, name: str, settings: Mapping[str, Any], router: DockerHAProxyRouter,
                        health: Health) -> tuple[dict[str, Any], CaptureConfig | None]:
        """The capture agent for the spec's `logging:` (a host process the router reaches on
        127.0.0.1; kept while its settings are the same), or none (stopped) without logging."""
        from orchestrator.router import capture_agent

        settings = dict(settings)
        logged = settings.get("logging") or []
        if not logged:
            capture_agent.stop_agent(router.folder)
            return settings, None
        kept = (self.store.load(name) or {}).get("router") or {}
        taken = {int(settings.get("metrics_port") or 0)}
        for key in ("capture_port", "capture_metrics_port"):
            port = int(settings.get(key) or kept.get(key) or 0)
            while not port or port in taken:
                port = free_port("127.0.0.1")
            taken.add(port)
            settings[key] = port
        capture_agent.start_agent(router.folder, capture_agent.Settings(
            deployment=name, main=settings["model"], spoa_port=settings["capture_port"],
            metrics_port=settings["capture_metrics_port"], admin_socket=router.socket_path,
            models_config=str(self.store.config_dir(name) / MODELS_CONFIG),
            grpc_rate=max(float(m["sample"]) for m in logged),
            models={m["name"]: capture_agent.ModelSettings(
                name=m["name"], sample=float(m["sample"]), prefix=m["prefix"],
                max_bytes=int(m["max_bytes"]), base_path=m["base_path"]) for m in logged}),
            deadline_s=max(health.deadline_s, 120.0))
        return settings, CaptureConfig(
            models=tuple(CaptureModel(m["name"], float(m["sample"])) for m in logged),
            agent_port=settings["capture_port"], spoe_path=str(router.folder / SPOE_FILE))

    def capture_status(self, name: str) -> dict[str, Any] | None:
        """The capture agent's process and the router's count of samples it could not deliver."""
        from orchestrator.router import capture_agent

        settings = (self._state(name).get("router") or {})
        if not settings.get("logging"):
            return None
        router = self.router(name)
        info = capture_agent.agent_info(router.folder) or {"running": False}
        drops = router.capture_drops() if router.running() else {}
        return {**info, "not_delivered": sum(drops.values()),
                "models": [m["name"] for m in settings["logging"]]}

    # -- canary containers (rollouts) ------------------------------------------------------

    def canary_containers(self, name: str) -> list[ContainerInfo]:
        found = self.api.list({LABEL_MANAGED_BY: MANAGER, LABEL_DEPLOYMENT: name, LABEL_ROLE: ROLE_CANARY})
        return sorted((c for c in found if c.labels.get(LABEL_DEPLOYMENT) == name),
                      key=lambda c: int(c.labels.get(LABEL_CANARY, "0")))

    def replicas(self, name: str) -> list[Replica]:
        state = self._state(name)
        host = _endpoint_host(state.get("host", "127.0.0.1"))
        result = [Replica(r["name"], STABLE, None, host, r["rest_port"], r["grpc_port"])
                  for r in state.get("replicas", [])]
        canary = self.store.load_canary(name) or {}
        result += [Replica(r["name"], CANARY, canary.get("version"), "127.0.0.1", r["rest_port"], r["grpc_port"])
                   for r in canary.get("replicas", [])]
        return result

    def wait_replica(self, name: str, replica: Replica, wanted: Mapping[str, Sequence[int]],
                     spec: Spec, on_poll: OnPoll | None = None) -> None:
        """Docker's own wait (it sees the container exit or restart); the replica's name is the
        container's."""
        self._wait(name, self.api.inspect(replica.name), {m: list(v) for m, v in wanted.items()},
                   spec.health, on_poll, replica.host)

    @property
    def model_path(self) -> Callable[[Spec], str]:
        return container_model_path

    def start_canary(self, name: str, version: int, *, count: int = 1) -> list[Replica]:
        """Canary containers serving only `version` of `name`'s model, each AVAILABLE.

        The same image and mounts as the stable replicas (an image chosen with `deploy --image`
        included), their own config folder, ports published on 127.0.0.1 for the router, and
        restart policy `no`: a canary that crashes stays down and the rollout sees it.
        """
        state = self._state(name)
        canary = self.canary_spec(name, version, **(state.get("image_fields") or {}))
        if canary is None:
            return [r for r in self.replicas(name) if r.role == CANARY]
        key = self.store.canary_key(name)
        config_dir = self.store.config_dir(key)
        plan = container_plan([canary])
        self._write_config(config_dir, plan.files)
        template = container_template([canary], config_dir, plan=plan, host_mounts=self.host_mounts)
        template = dataclasses.replace(template, restart="no",
                                       labels={**template.labels, LABEL_ROLE: ROLE_CANARY})
        self._ensure_image(canary, template.image)
        started: list[ContainerInfo] = []
        try:
            for index in range(count):
                grpc_port, rest_port = two_free_ports("127.0.0.1")
                request = dataclasses.replace(
                    template, name=f"tfso-{name}-canary{index}-{secrets.token_hex(3)}",
                    labels={**template.labels, LABEL_CANARY: str(index)},
                    ports={GRPC_INSIDE: ("127.0.0.1", grpc_port), REST_INSIDE: ("127.0.0.1", rest_port)})
                cid = self.api.create(request)
                try:
                    self.api.start(cid, name=request.name)
                except DockerError:
                    self._remove(cid)
                    raise
                started.append(self.api.inspect(cid))
            for container in started:
                self._wait(key, container, {name: [version]}, canary.health, None, "127.0.0.1")
        except BaseException:
            for container in started:
                self._remove(container)
            raise
        entries = [{"index": int(c.labels[LABEL_CANARY]), "id": c.id, "name": c.name,
                    "grpc_port": c.ports[GRPC_INSIDE][1], "rest_port": c.ports[REST_INSIDE][1],
                    "started_at": c.started_at} for c in started]
        self.store.save_canary(name, {"name": key, "runtime": "docker-canary", "deployment": name,
                                      "version": version, "replicas": entries})
        return [r for r in self.replicas(name) if r.role == CANARY]

    def canary_alive(self, name: str) -> bool:
        """Every canary container of the record still runs, never restarted."""
        state = self.store.load_canary(name)
        if not state or not state.get("replicas"):
            return False
        for r in state["replicas"]:
            try:
                c = self.api.inspect(r["id"])
            except DockerError:
                return False
            if not c.running or c.restart_count or c.started_at != r["started_at"]:
                return False
        return True

    def remove_canary(self, name: str) -> None:
        self._remove_canary(name)

    def _remove_canary(self, name: str) -> list[str]:
        """Stop and remove every canary container of `name` (found by labels), forget its record."""
        removed = []
        for c in self.canary_containers(name):
            self._stop_and_remove(c)
            removed.append(c.name)
        self.store.delete_canary(name)
        return removed

    # -- the other verbs -------------------------------------------------------------------

    def reload(self, specs: Sequence[Spec], *, on_poll: OnPoll | None = None) -> Deployment:
        """Re-apply the specs keeping the image the deployment runs (`deploy --image` stays)."""
        state = self._state(specs[0].name)
        keep = state.get("image_fields") or {}
        return self.deploy([s.model_copy(update=keep) for s in specs], on_poll=on_poll)

    def _state(self, name: str) -> dict[str, Any]:
        state = self.store.load(name)
        if state is None or state.get("runtime") != self.name:
            known = ", ".join(self.store.names()) or "none"
            raise RuntimeFailure(f"no docker deployment named {name!r} (deployments: {known})",
                                 fix=f"deploy it with `tfsctl deploy {name} --runtime docker`")
        return state

    def status(self, name: str) -> list[ReplicaStatus]:
        state = self._state(name)
        host = _endpoint_host(state.get("host", "127.0.0.1"))
        result = []
        containers = self.containers(name)
        present = {int(c.labels[LABEL_REPLICA]) for c in containers}
        for r in state.get("replicas", []):
            if r["index"] not in present:
                result.append(ReplicaStatus(r["index"], r["id"][:12], False, r["grpc_port"], r["rest_port"],
                                            detail="container is gone (removed outside tfsctl); "
                                            f"`tfsctl deploy {name}` starts it again"))
        for c in containers:
            index = int(c.labels[LABEL_REPLICA])
            grpc_port = c.ports.get(GRPC_INSIDE, ("", 0))[1]
            rest_port = c.ports.get(REST_INSIDE, ("", 0))[1]
            if not c.running:
                detail = f"container {c.describe()}"
                if c.restart_count:
                    detail += f" (restarted {c.restart_count} time(s))"
                result.append(ReplicaStatus(index, c.id[:12], False, grpc_port, rest_port,
                                            detail=detail + "; `tfsctl logs` shows why"))
                continue
            models = tuple(model_status(f"http://{host}:{rest_port}", m) for m in state["models"])
            detail = f"restarted {c.restart_count} time(s)" if c.restart_count else ""
            result.append(ReplicaStatus(index, c.id[:12], True, grpc_port, rest_port, models, detail))
        if state.get("router"):
            router = self.router(name).container()
            if router is None or not router.running:
                what = "is gone" if router is None else router.describe()
                result.append(ReplicaStatus(
                    -1, router.id[:12] if router else "router", False, state["router"]["grpc_port"],
                    state["router"]["rest_port"], detail=f"router container {what}; "
                    f"`tfsctl deploy {name}` starts it again"))
        capture = self.capture_status(name)
        if capture is not None:
            lost = f"; {capture['not_delivered']} sample(s) the router could not deliver"
            detail = (f"capture agent pid {capture.get('pid')} (payload logs of "
                      f"{', '.join(capture['models'])}){lost}" if capture["running"] else
                      f"capture agent is not running{lost}; `tfsctl deploy {name}` starts it again")
            result.append(ReplicaStatus(CAPTURE_INDEX, "capture", bool(capture["running"]),
                                        int(capture.get("spoa_port") or 0),
                                        int(capture.get("metrics_port") or 0), detail=detail))
        return sorted(result, key=lambda r: r.index)

    def ps(self, name: str) -> list[dict[str, Any]]:
        """One row per container: replicas (by index), then `router` and `canaryI` when present."""
        state = self._state(name)

        def row(replica: int | str, c: ContainerInfo) -> dict[str, Any]:
            return {"replica": replica, "id": c.id[:12], "name": c.name,
                    "image": c.image, "status": c.describe(), "restarts": c.restart_count,
                    "started_at": c.started_at, "grpc_port": c.ports.get(GRPC_INSIDE, ("", 0))[1],
                    "rest_port": c.ports.get(REST_INSIDE, ("", 0))[1],
                    "spec_hash": c.labels.get(LABEL_SPEC_HASH, "")}

        rows = [row(int(c.labels[LABEL_REPLICA]), c) for c in self.containers(name)]
        if state.get("router"):
            for c in self.router(name).containers():
                rows.append({**row("router", c), "grpc_port": state["router"]["grpc_port"],
                             "rest_port": state["router"]["rest_port"]})
        rows += [row(f"canary{c.labels.get(LABEL_CANARY, '0')}", c) for c in self.canary_containers(name)]
        capture = self.capture_status(name)
        if capture is not None:
            rows.append({"replica": "capture", "id": str(capture.get("pid", "")), "name": "capture agent",
                         "image": "(host process)",
                         "status": "running" if capture["running"] else "not running",
                         "restarts": 0, "started_at": "", "grpc_port": capture.get("spoa_port", ""),
                         "rest_port": capture.get("metrics_port", ""),
                         "detail": f"{capture['not_delivered']} not delivered"})
        return rows

    def logs(self, name: str, *, tail: int = 100) -> dict[int, str]:
        self._state(name)
        return {int(c.labels[LABEL_REPLICA]): self._logs(c.id, tail) for c in self.containers(name)}

    def scale(self, name: str, replicas: int, *, on_poll: OnPoll | None = None) -> Deployment:
        """Change only the number of replicas: new ones from the template the others run."""
        if not 1 <= replicas <= 64:
            raise RuntimeFailure(f"cannot scale {name} to {replicas}", fix="use 1 to 64 replicas")
        state = self._state(name)
        template = ContainerRequest.from_json(state["template"])
        by_index, extra = self._by_index(name)
        for c in extra:
            self._remove(c)
        host = state.get("host", "127.0.0.1")
        health = Health(**(state.get("health") or {}))
        created: list[ContainerInfo] = []
        try:
            for index in range(replicas):
                if index in by_index:
                    continue
                grpc_port, rest_port = two_free_ports(host)
                created.append(self._start_replica(
                    template, deployment=name, index=index, host=host,
                    grpc_port=grpc_port, rest_port=rest_port, spec_hash=state["spec_hash"]))
            for container in created:
                self._wait(name, container, state["wanted"], health, on_poll, host)
        except BaseException:
            for container in created:
                self._remove(container)
            raise
        removed = [c for i, c in by_index.items() if i >= replicas]
        for container in sorted(removed, key=lambda c: -int(c.labels[LABEL_REPLICA])):
            self._stop_and_remove(container)
        current = [c for i, c in by_index.items() if i < replicas] + created
        refreshed = [self.api.inspect(c.id) for c in current]
        state = {**state, "replicas": [self._replica_json(c) for c in sorted(
            refreshed, key=lambda c: int(c.labels[LABEL_REPLICA]))]}
        self.store.save(name, state)
        if state.get("router"):
            router, _ = self._ensure_router(name, state["router"], refreshed, health, state["wanted"])
            state = {**state, "router": router}
            self.store.save(name, state)
        action = "scaled" if created or removed else "unchanged"
        return self._outcome(state, action, f"{len(state['replicas'])} replica(s)")

    def stop(self, name: str) -> list[str]:
        """Stop and remove this deployment's containers (found by our labels), forget it.

        The router goes first (no traffic reaches replicas about to stop), then any canary,
        then the replicas.
        """
        from orchestrator.router.capture_agent import stop_agent

        stopped = []
        router = self.router(name)
        for container in router.containers():
            stopped.append(container.name)
        router.stop()
        if stop_agent(router.folder):
            stopped.append("capture agent")
        stopped += self._remove_canary(name)
        for container in self.containers(name):
            self._stop_and_remove(container)
            stopped.append(container.name)
        self.store.delete(name)
        return stopped
