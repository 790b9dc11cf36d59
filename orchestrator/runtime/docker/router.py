"""The deployment's router (HAProxy) as a container, beside its replicas.

With `router: true` the spec's ports belong to HAProxy: one container from `router_image` (the
official `haproxy` image by default) on the host network, binding the spec's ports on the
spec's host and reaching every replica on its own 127.0.0.1-published port. Its state folder
(config and admin socket) is bind-mounted at the same path, so the host drives weights through
the same runtime API as the local runtime's router. Router and canary containers carry the
deployment's labels plus `io.tfso.role` (`router` or `canary`) and no replica label, so replica
bookkeeping never mistakes them for replicas, while `stop` removes every container of the
deployment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.router.haproxy import HAProxyRouter, RouterConfig, render_config
from orchestrator.runtime.base import digest
from orchestrator.runtime.docker.api import ContainerInfo, ContainerRequest, DockerError, Mount
from orchestrator.runtime.docker.templates import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    MANAGER,
    ROLE_ROUTER,
)
from orchestrator.spec import Spec


def router_settings(spec: Spec, host_mounts: Sequence[Mount] = (),
                    specs: Sequence[Spec] = ()) -> dict[str, Any]:
    """What the router container is made from, as kept in the deployment's state; `logging`:
    the served models whose payloads the router captures (orchestrator.router.capture)."""
    logged = [s for s in (specs or [spec]) if s.logging is not None]
    return {"image": spec.router_image, "model": spec.name, "rest_port": spec.ports.rest,
            "grpc_port": spec.ports.grpc, "bind_host": spec.ports.host,
            "mounts": [[m.source, m.target] for m in host_mounts],
            "logging": [{"name": s.name, "sample": s.logging.sample,
                         "prefix": f"{s.logging.path}/{s.name}",
                         "max_bytes": int(s.logging.max_mb * 1024 * 1024),
                         "base_path": str(s.base_path)} for s in logged if s.logging is not None]}


class DockerHAProxyRouter(HAProxyRouter):
    """The deployment's HAProxy as a container of `image`, found again by its labels.

    Host networking: HAProxy binds the spec's ports on the spec's host itself and reaches the
    replicas on their 127.0.0.1-published ports. The state folder is mounted read-write at the
    same path, so haproxy.cfg names the admin socket by its host path and `RuntimeApi` (hence
    `set_canary`, `set_weight`, `counters`) works from the host unchanged. The container runs
    as the calling user, so the socket (mode 600) is that user's, as with a local process.
    The command is the official image's (`haproxy -f CFG`; its entrypoint adds `-W -db`).
    """

    def __init__(self, folder: Path, api: Any, deployment: str, *, image: str = "haproxy:2.6",
                 mounts: Sequence[Sequence[str]] = (), stop_timeout_s: float = 5.0,
                 endpoint: tuple[str, int, int] | None = None) -> None:
        super().__init__(folder, endpoint=endpoint)
        self.docker = api
        self.deployment = deployment
        self.image = image
        self.mounts = tuple(Mount(str(src), str(tgt)) for src, tgt in mounts)
        self.stop_timeout_s = stop_timeout_s

    def labels(self) -> dict[str, str]:
        return {LABEL_MANAGED_BY: MANAGER, LABEL_DEPLOYMENT: self.deployment, LABEL_ROLE: ROLE_ROUTER}

    def config_hash(self, config: RouterConfig) -> str:
        """Config text, image and mounts: the router is replaced only when one of them changes."""
        return digest([render_config(config, self.socket_path, str(self.map_path)), self.image,
                       [dataclasses.astuple(m) for m in self.mounts]])

    def request(self, config: RouterConfig) -> ContainerRequest:
        return ContainerRequest(
            image=self.image,
            command=("haproxy", "-f", str(self.config_path)),
            name=f"tfso-{self.deployment}-router-{secrets.token_hex(3)}",
            labels={**self.labels(), LABEL_SPEC_HASH: self.config_hash(config)},
            mounts=(Mount(str(self.folder), str(self.folder), read_only=False), *self.mounts),
            restart="unless-stopped",
            user=f"{os.getuid()}:{os.getgid()}",
            network_mode="host",
        )

    def containers(self) -> list[ContainerInfo]:
        found = self.docker.list(self.labels())
        return sorted((c for c in found if c.labels.get(LABEL_ROLE) == ROLE_ROUTER
                       and c.labels.get(LABEL_DEPLOYMENT) == self.deployment),
                      key=lambda c: (not c.running, c.started_at))

    def container(self) -> ContainerInfo | None:
        found = self.containers()
        return found[0] if found else None

    def start(self, config: RouterConfig, *, deadline_s: float = 15.0) -> int:
        self.stop()
        self.write_config(config)
        Path(self.socket_path).unlink(missing_ok=True)
        request = self.request(config)
        cid = self.docker.create(request)
        self._container_id = cid
        try:
            self.docker.start(cid, name=request.name)

            def exited() -> str | None:
                now = self.docker.inspect(cid)
                if now.status in ("exited", "dead"):
                    return f"router container {request.name} {now.describe()}"
                if now.restart_count or now.status == "restarting":
                    return f"router container {request.name} keeps exiting (last exit code {now.exit_code})"
                return None

            self.wait_until_answering(deadline_s, exited)
        except BaseException:
            with contextlib.suppress(DockerError):
                self.docker.remove(cid)
            raise
        return int(self.docker.inspect(cid).pid)

    def _log_tail(self) -> str:
        cid = getattr(self, "_container_id", None) or (c.id if (c := self.container()) else None)
        if cid is None:
            return ""
        try:
            return str(self.docker.logs(cid, tail=20))
        except DockerError as exc:
            return f"(no logs: {exc.message})"

    def pid(self) -> int | None:
        c = self.container()
        return c.pid if c is not None and c.running else None

    def running(self) -> bool:
        c = self.container()
        return c is not None and c.running

    def stop(self, deadline_s: float = 10.0) -> None:
        for c in self.containers():
            if c.running:
                with contextlib.suppress(DockerError):
                    self.docker.stop(c.id, timeout_s=min(deadline_s, self.stop_timeout_s))
            with contextlib.suppress(DockerError):
                self.docker.remove(c.id)
        Path(self.socket_path).unlink(missing_ok=True)
