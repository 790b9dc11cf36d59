"""The runtime interface every backend implements, and what they share.

A runtime realises a Plan as replicas and reports their state. Deploy is idempotent: the same
spec changes nothing; a changed models.config is rewritten atomically and hot-reloaded through
TF Serving's own gRPC `HandleReloadConfigRequest`; changed flags replace replicas one at a time.
A failed deploy or reload puts the previous config back, so what served before still serves.
"""

from __future__ import annotations

import hashlib
import json
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.errors import RuntimeError_
from orchestrator.health import ModelHealth, Readiness
from orchestrator.spec import Spec

OnPoll = Callable[[Readiness], None]


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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_ports_free(name: str, host: str, ports: Mapping[str, int]) -> None:
    busy = {what: port for what, port in ports.items() if port_in_use(host, port)}
    if busy:
        listing = ", ".join(f"{what} port {port}" for what, port in busy.items())
        raise RuntimeError_(
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
            raise RuntimeError_(
                f"reload on {grpc_address} failed: {exc.code().name}: {exc.details()}",
                fix="check the new config with `tfsctl render`; the previous config is still served",
            ) from exc
    if response.status.error_code != 0:
        raise RuntimeError_(
            f"reload on {grpc_address} refused: {response.status.error_message}",
            fix="check the new config with `tfsctl render`; the previous config is still served",
        )


class Runtime(ABC):
    """deploy, status, reload, logs, scale, stop — the same verbs for every backend."""

    name: str

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
        raise RuntimeError_(f"the {self.name} runtime cannot scale {name} yet",
                            fix="set `replicas:` in the spec and deploy again")

    def ps(self, name: str) -> list[dict[str, Any]]:
        """One row per replica (process or container); runtimes add what they know."""
        return [{"replica": r.index, "id": r.id, "status": "running" if r.running else "exited",
                 "grpc_port": r.grpc_port, "rest_port": r.rest_port, "detail": r.detail}
                for r in self.status(name)]
