"""The runtime interface every backend implements, and what they share.

A runtime realises a Plan as replicas and reports their state. Deploy is idempotent: the same
spec changes nothing; a changed models.config is rewritten atomically and hot-reloaded through
TF Serving's own gRPC `HandleReloadConfigRequest`; changed flags replace replicas one at a time.
A failed deploy or reload puts the previous config back, so what served before still serves.
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import RuntimeFailure
from orchestrator.health import ModelHealth, Readiness
from orchestrator.spec import Spec
from orchestrator.state import StateStore

if TYPE_CHECKING:
    from orchestrator.plan import ReloadStep
    from orchestrator.router.base import Router

OnPoll = Callable[[Readiness], None]
STABLE, CANARY = "stable", "canary"


@dataclass(frozen=True)
class Replica:
    """One serving replica (process, container or pod) as a rollout and a router see it."""

    name: str
    role: str  # STABLE | CANARY
    version: int | None  # the one version a canary serves; None for stable replicas
    host: str  # always 127.0.0.1 for what tests reach
    rest_port: int
    grpc_port: int

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"


@dataclass(frozen=True)
class ReplicaStatus:
    index: int
    id: str
    running: bool
    grpc_port: int
    rest_port: int
    models: tuple[ModelHealth, ...] = ()
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Deployment:
    """What `deploy` did and where the deployment answers."""

    name: str
    runtime: str
    action: str  # created | unchanged | reloaded | replaced
    rest_url: str
    grpc_address: str
    replicas: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    note: str = ""


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def wanted_versions(specs: Sequence[Spec]) -> dict[str, list[int]]:
    """Every version each model must have AVAILABLE, after checking each one can be served.

    Checked before anything starts or reloads, so a corrupt folder is refused up front and
    whatever serves now keeps serving.
    """
    from orchestrator.errors import ModelError
    from orchestrator.savedmodel import inspect_version, version_dirs

    wanted = {}
    for spec in specs:
        dirs = version_dirs(spec.base_path)
        versions = spec.version_policy.select(list(dirs))
        for version in versions:
            info = inspect_version(dirs[version], version)
            if info.error:
                raise ModelError(
                    f"{spec.name} version {version} cannot be served: {info.error}",
                    fix=f"re-export {dirs[version]}, or leave it out with "
                    f"`version_policy: {{specific: [...]}}` in the spec",
                )
        wanted[spec.name] = versions
    return wanted


def deployed_spec(state: Mapping[str, Any], name: str) -> Spec:
    """The spec `name` was deployed from (its state records the files), else serving_configs/NAME."""
    from orchestrator.spec import load_spec

    for path in state.get("specs") or []:
        spec = load_spec(path)
        if spec.name == name:
            return spec
    return load_spec(name)


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on host:port (SO_REUSEADDR, as servers bind, so TIME_WAIT is fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a server that binds it a moment later. Taken below the
    kernel's ephemeral range when there is room: a port the kernel hands out (bind to 0) can be
    given to some process's outgoing connection before our server binds it (seen as HAProxy's
    "Address already in use" while other tests ran)."""
    low = _ephemeral_low()
    if low - _LOWEST >= 1024:
        for _ in range(64):
            port = _random.randrange(_LOWEST, low)
            with _handed_lock:
                # Nothing listens on a port just handed out yet: two calls in a row (a spec's
                # grpc and rest ports) must not draw the same one.
                if port in _handed_set:
                    continue
                if not port_in_use(host, port):
                    if len(_handed) == _handed.maxlen:
                        _handed_set.discard(_handed[0])
                    _handed.append(port)
                    _handed_set.add(port)
                    return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


_LOWEST = 20000  # above the ports services commonly own
_random = random.SystemRandom()  # workers and parallel tests must not draw the same sequence
_handed: collections.deque[int] = collections.deque(maxlen=2048)  # the latest ports handed out
_handed_set: set[int] = set()
_handed_lock = threading.Lock()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; elsewhere, bind(0) below


def check_ports_free(name: str, host: str, ports: Mapping[str, int]) -> None:
    busy = {what: port for what, port in ports.items() if port_in_use(host, port)}
    if busy:
        listing = ", ".join(f"{what} port {port}" for what, port in busy.items())
        raise RuntimeFailure(
            f"cannot deploy {name}: {listing} on {host} already in use",
            fix="stop whatever listens there (`ss -ltnp` shows it), or set other ports in the spec "
            "(`ports: {grpc: 9500, rest: 9501}`)",
        )


def reload_config(grpc_address: str, models_config_text: str, *, timeout_s: float = 60.0) -> None:
    """Ask one TF Serving to replace its model config (TF Serving's own reload RPC)."""
    import grpc
    from google.protobuf import text_format

    from orchestrator.protocol.methods import HANDLE_RELOAD_CONFIG
    from orchestrator.protos import apis_pb2

    request = apis_pb2.ReloadConfigRequest()
    text_format.Parse(models_config_text, request.config)
    with grpc.insecure_channel(grpc_address) as channel:
        call = channel.unary_unary(
            HANDLE_RELOAD_CONFIG.path,
            request_serializer=apis_pb2.ReloadConfigRequest.SerializeToString,
            response_deserializer=apis_pb2.ReloadConfigResponse.FromString,
        )
        try:
            response = call(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise RuntimeFailure(
                f"reload on {grpc_address} failed: {exc.code().name}: {exc.details()}",
                fix="check the new config with `tfsctl render`; the previous config is still served",
            ) from exc
    if response.status.error_code != 0:
        raise RuntimeFailure(
            f"reload on {grpc_address} refused: {response.status.error_message}",
            fix="check the new config with `tfsctl render`; the previous config is still served",
        )


class Runtime(ABC):
    """deploy, status, reload, logs, scale, stop — the same verbs for every backend — and the
    replica verbs a rollout drives (replicas, start_canary, remove_canary, apply_label_steps,
    router), so a new runtime needs no rollout code of its own."""

    name: str
    store: StateStore

    @abstractmethod
    def deploy(self, specs: Sequence[Spec], *, on_poll: OnPoll | None = None) -> Deployment: ...

    @abstractmethod
    def status(self, name: str) -> list[ReplicaStatus]: ...

    @abstractmethod
    def logs(self, name: str, *, tail: int = 100) -> dict[int, str]: ...

    @abstractmethod
    def stop(self, name: str) -> list[str]: ...

    def reload(self, specs: Sequence[Spec], *, on_poll: OnPoll | None = None) -> Deployment:
        """Re-apply the spec; deploy is idempotent, so this is deploy on an existing deployment."""
        return self.deploy(specs, on_poll=on_poll)

    def scale(self, name: str, replicas: int, *, on_poll: OnPoll | None = None) -> Deployment:
        """Change the number of replicas only (runtimes that can't say so)."""
        raise RuntimeFailure(f"the {self.name} runtime cannot scale {name} yet",
                             fix="set `replicas:` in the spec and deploy again")

    def ps(self, name: str) -> list[dict[str, Any]]:
        """One row per replica (process or container); runtimes add what they know."""
        return [{"replica": r.index, "id": r.id, "status": "running" if r.running else "exited",
                 "grpc_port": r.grpc_port, "rest_port": r.rest_port, "detail": r.detail}
                for r in self.status(name)]

    # -- what a rollout drives -----------------------------------------------------------------

    def replicas(self, name: str) -> list[Replica]:
        """The stable replicas of `name`, then its canary replicas (if a canary runs)."""
        raise RuntimeFailure(f"the {self.name} runtime cannot list the replicas of {name} yet",
                             fix="roll out on the local or docker runtime")

    def start_canary(self, name: str, version: int, *, count: int = 1) -> list[Replica]:
        """Canary replicas serving only `version` of `name`'s model, returned once each has it
        AVAILABLE (or a named error); the stable replicas keep serving untouched."""
        raise RuntimeFailure(f"the {self.name} runtime cannot start canary replicas yet",
                             fix="roll out with `--mode labels`, or on the local or docker runtime")

    def remove_canary(self, name: str) -> None:
        """Stop every canary replica of `name` and forget it; nothing to remove is fine."""
        raise RuntimeFailure(f"the {self.name} runtime cannot remove canary replicas yet",
                             fix="roll out on the local or docker runtime")

    def canary_spec(self, name: str, version: int, **update: Any) -> Spec | None:
        """The spec new canary replicas of `version` run (the deployed one, that version alone,
        no labels), after removing any other canary; None when a live one serves it already."""
        from orchestrator.spec import VersionPolicy

        state = self.store.load(name) or {}
        existing = self.store.load_canary(name)
        if existing and existing.get("version") == version and self.canary_alive(name):
            return None
        self.remove_canary(name)
        return deployed_spec(state, name).model_copy(update={
            **update, "version_policy": VersionPolicy(kind="specific", versions=(version,)), "version_labels": {}})

    def canary_alive(self, name: str) -> bool:
        """Every canary replica still runs (never restarted): a crashed canary fails the rollout."""
        canary = [r for r in self.replicas(name) if r.role == CANARY]
        return bool(canary)

    def router(self, name: str) -> Router:
        """The router in front of `name` (its `router: true`)."""
        raise RuntimeFailure(f"the {self.name} runtime has no router for {name}",
                             fix="roll out with `--mode labels`")

    def wait_replica(self, name: str, replica: Replica, wanted: Mapping[str, Sequence[int]],
                     spec: Spec, on_poll: OnPoll | None = None) -> None:
        """Return once `replica` has every `wanted` version AVAILABLE, or raise a named error."""
        from orchestrator.errors import HealthTimeout
        from orchestrator.health import wait_until_available

        result = wait_until_available(replica.rest_url, {m: list(v) for m, v in wanted.items()},
                                      deadline_s=spec.health.deadline_s,
                                      poll_interval_s=spec.health.poll_interval_s, on_poll=on_poll)
        if not result.ready:
            raise HealthTimeout(f"{name}: {replica.name} not AVAILABLE ({result.detail})",
                                fix=f"raise health.deadline_s, or read `tfsctl logs {name}`")

    def apply_label_steps(self, name: str, steps: Sequence[ReloadStep], *, spec: Spec | None = None,
                          replicas: Sequence[Replica] | None = None, on_poll: OnPoll | None = None) -> None:
        """The one step-applier for `plan.plan_label_move` (and deploy's two-step reloads).

        Each step is one whole-config reload on every stable replica (or on `replicas`), applied
        once its `wait_available` versions are AVAILABLE there (TF Serving labels only AVAILABLE
        versions); `then_available` is waited for after it. Steps go one at a time over all
        replicas, so every replica has a step before any has the next.
        """
        from orchestrator.spec import load_spec

        targets = [r for r in self.replicas(name) if r.role == STABLE] if replicas is None else list(replicas)
        if spec is None:
            spec = load_spec(name)
        for step in steps:
            if replicas is None:
                self.write_models_config(name, step.models_config)
            for replica in targets:
                if step.wait_available:
                    self.wait_replica(name, replica, step.wait_available, spec, on_poll)
                reload_config(replica.grpc_address, step.models_config)
            for replica in targets:
                if step.then_available:
                    self.wait_replica(name, replica, step.then_available, spec, on_poll)

    def write_models_config(self, name: str, text: str) -> None:
        """Keep the deployment's models.config file as its servers now run it (for a restart)."""
        from orchestrator.files import write_atomic
        from orchestrator.plan import MODELS_CONFIG

        config_dir = (self.store.load(name) or {}).get("config_dir")
        if config_dir:
            write_atomic(Path(config_dir) / MODELS_CONFIG, text)

    @property
    def model_path(self) -> Callable[[Spec], str]:
        """Where this runtime's servers find a model (`plan.host_model_path` or the container's)."""
        from orchestrator.plan import host_model_path

        return host_model_path
