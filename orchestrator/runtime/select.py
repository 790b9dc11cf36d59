"""Which runtime serves a spec: the one asked for, or for `auto` the best one available."""

from __future__ import annotations

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.base import Runtime
from orchestrator.spec import Spec
from orchestrator.state import StateStore


def runtime_by_name(name: str, store: StateStore | None = None) -> Runtime:
    if name == "local":
        from orchestrator.runtime.local import LocalRuntime

        return LocalRuntime(store)
    if name == "docker":
        from orchestrator.runtime.docker import DockerRuntime

        return DockerRuntime(store)
    if name == "kubernetes":
        from orchestrator.runtime.kubernetes import KubernetesRuntime

        return KubernetesRuntime(store)
    raise RuntimeFailure(f"unknown runtime {name!r}", fix="use auto, local, docker or kubernetes")


def check_host_runtime(spec: Spec, runtime: str | None = None) -> None:
    """Local, docker and compose cannot honour the Kubernetes-only fields: refuse, never ignore."""
    from orchestrator.spec import GatewayRouter

    if (runtime or spec.runtime) == "kubernetes":
        return
    if isinstance(spec.router, GatewayRouter) or spec.autoscale is not None:
        field = "router.gateway" if isinstance(spec.router, GatewayRouter) else "autoscale"
        raise RuntimeFailure(
            f"{spec.name}: {field} is a Kubernetes setting; the local and docker runtimes cannot "
            "honour it",
            fix=f"deploy it on a cluster (`tfsctl deploy {spec.name} --runtime kubernetes`), render "
            f"manifests with `tfsctl render {spec.name} --target kubernetes --out DIR`, or drop "
            "the field (router: true puts HAProxy in front locally)",
        )


def choose_runtime(spec: Spec, requested: str | None, store: StateStore | None = None) -> tuple[Runtime, str]:
    """The runtime and a sentence saying why it was chosen."""
    check_host_runtime(spec, requested)
    wanted = requested or spec.runtime
    if wanted != "auto":
        return runtime_by_name(wanted, store), f"runtime {wanted} (as asked)"
    from orchestrator.runtime.docker import docker_usable

    usable, why = docker_usable(spec)
    if usable:
        return runtime_by_name("docker", store), f"runtime docker (auto: {why})"
    return runtime_by_name("local", store), f"runtime local (auto: {why})"


def runtime_of_deployment(name: str, store: StateStore | None = None) -> Runtime:
    """The runtime that made an existing deployment (from the state folder)."""
    store = store or StateStore()
    state = store.load(name)
    if state is None:
        known = ", ".join(store.names()) or "none"
        raise RuntimeFailure(f"no deployment named {name!r} (deployments: {known})",
                             fix=f"deploy it first: `tfsctl deploy {name}`")
    return runtime_by_name(state["runtime"], store)
