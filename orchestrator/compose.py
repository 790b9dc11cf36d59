"""Docker Compose files equivalent to what the Docker runtime launches (pure, no daemon).

`tfsctl compose NAME` writes `compose/NAME/compose.yaml` (the spec as written), for a CPU spec
also `compose.gpu.yaml` (the same with `device: gpu`: the `-gpu` image and a GPU reservation in
`deploy.resources.reservations.devices`), and `config/` with the rendered TF Serving files. The
services come from the very `ContainerRequest` the runtime creates containers from, so image,
command, mounts, ports, restart policy, limits and GPUs cannot drift apart; only the labels say
`io.tfso.managed-by: compose`, so `tfsctl stop` never touches what Compose started.

Compose cannot pick free ports at run time as the runtime does for replicas after the first,
so replica I publishes the spec's ports + 2·I. With `router: true`, the replicas publish
nothing: an HAProxy service reaches them by service name on the Compose network and publishes
the spec's ports (static weights; canary rollouts need `tfsctl`, which drives the runtime API).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from orchestrator.runtime.docker.api import ContainerRequest
from orchestrator.runtime.docker.templates import (
    GRPC_INSIDE,
    LABEL_REPLICA,
    REST_INSIDE,
    container_plan,
    container_template,
    effective_specs,
)
from orchestrator.spec import Spec

ROUTER_DIR = "router"
COMPOSE_FILE = "compose.yaml"
GPU_COMPOSE_FILE = "compose.gpu.yaml"
MANAGER = "compose"
# When I is a replica index, the host ports are the spec's + PORT_STEP·I.
PORT_STEP = 2


def _relative(path: str, out_dir: Path) -> str:
    rel = os.path.relpath(path, out_dir.absolute())
    return rel if rel.startswith(".") else f"./{rel}"


def _service(request: ContainerRequest, spec: Spec, out_dir: Path, index: int) -> dict[str, Any]:
    host = spec.ports.host
    service: dict[str, Any] = {
        "image": request.image,
        # `missing` is spelled `if_not_present` by docker-compose 1.x; Compose v2 takes both.
        "pull_policy": "if_not_present" if spec.pull == "missing" else spec.pull,
        "init": request.init,
        "command": list(request.command),
        "environment": dict(request.environment),
        "ports": [
            f"{host}:{spec.ports.grpc + PORT_STEP * index}:{GRPC_INSIDE}",
            f"{host}:{spec.ports.rest + PORT_STEP * index}:{REST_INSIDE}",
        ],
        "volumes": [
            {"type": "bind", "source": _relative(m.source, out_dir), "target": m.target,
             "read_only": m.read_only}
            for m in request.mounts
        ],
        "restart": request.restart,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "labels": {**request.labels, LABEL_REPLICA: str(index)},
    }
    if spec.router:
        del service["ports"]  # reached through the router service only
    if request.nano_cpus:
        service["cpus"] = request.nano_cpus / 1e9
    if request.mem_limit:
        service["mem_limit"] = request.mem_limit
    if request.gpus is not None:
        service["deploy"] = {"resources": {"reservations": {"devices": [
            {"capabilities": ["gpu"], "count": request.gpus}
        ]}}}
    return service


def compose_document(specs: Sequence[Spec], out_dir: Path) -> dict[str, Any]:
    """The Compose document for `specs`, paths relative to `out_dir` (where it will be written)."""
    from orchestrator.runtime.select import check_host_runtime

    for spec in specs:
        check_host_runtime(spec)
        if spec.logging is not None:
            from orchestrator.errors import SpecError

            raise SpecError(f"{spec.name}: payload logging (`logging:`) needs the router's capture "
                            "agent, which `tfsctl deploy --runtime docker` runs and Compose cannot",
                            field="logging",
                            fix="deploy with `tfsctl deploy NAME --runtime docker`, or remove `logging:`")
    specs = effective_specs(specs)
    main = specs[0]
    template = container_template(specs, out_dir.absolute() / "config", manager=MANAGER)
    services = {f"{main.name}-{i}": _service(template, main, out_dir, i) for i in range(main.replicas)}
    if main.router:
        host = main.ports.host
        services[f"{main.name}-router"] = {
            "image": main.router_image,
            "pull_policy": "if_not_present" if main.pull == "missing" else main.pull,
            "ports": [f"{host}:{main.ports.grpc}:{GRPC_INSIDE}", f"{host}:{main.ports.rest}:{REST_INSIDE}"],
            "volumes": [{"type": "bind", "source": f"./{ROUTER_DIR}", "target": "/usr/local/etc/haproxy",
                         "read_only": True}],
            "depends_on": list(services),
            "restart": template.restart,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "labels": {k: v for k, v in template.labels.items() if k != LABEL_REPLICA},
        }
    return {"services": services}


def router_config(spec: Spec) -> str:
    """haproxy.cfg for the Compose router: replicas by service name, via Docker's DNS."""
    from orchestrator.router.haproxy import RouterConfig, Upstream, render_config

    config = RouterConfig(
        name=spec.name, model=spec.name, rest_port=REST_INSIDE, grpc_port=GRPC_INSIDE, bind_host="*",
        stable=tuple(Upstream(grpc_port=GRPC_INSIDE, rest_port=REST_INSIDE, host=f"{spec.name}-{i}")
                     for i in range(spec.replicas)),
        extra_sections=("resolvers docker", "    nameserver dns 127.0.0.11:53", ""),
        server_options="resolvers docker init-addr last,libc,none",
    )
    return render_config(config, "/tmp/haproxy-admin.sock")


def _header(specs: Sequence[Spec], file: str) -> str:
    names = " ".join(s.name for s in specs)
    return (
        f"# Generated by `tfsctl compose {names}`: the containers `tfsctl deploy {names} "
        "--runtime docker` runs.\n"
        f"# Start: docker compose -f {file} up -d   (docker-compose on older engines)\n"
        "# Regenerate instead of editing; config/ holds the TF Serving files mounted at /config.\n"
    )


def render_compose(specs: Sequence[Spec], out_dir: Path) -> dict[str, str]:
    """Every file `tfsctl compose` writes into `out_dir`, by relative name (pure)."""
    plan = container_plan(effective_specs(specs))
    files = {f"config/{name}": text for name, text in plan.files.items()}
    if specs[0].router:
        files[f"{ROUTER_DIR}/haproxy.cfg"] = router_config(effective_specs(specs)[0])
    variants = [(COMPOSE_FILE, list(specs))]
    if specs[0].device == "cpu":
        variants.append((GPU_COMPOSE_FILE, [s.model_copy(update={"device": "gpu"}) for s in specs]))
    for file, variant in variants:
        document = compose_document(variant, out_dir)
        files[file] = _header(variant, file) + yaml.safe_dump(document, sort_keys=False,
                                                              default_flow_style=False, width=100)
    return files


def write_compose(specs: Sequence[Spec], out_dir: Path) -> list[Path]:
    from orchestrator.state import write_files_atomic

    files = render_compose(specs, out_dir)
    write_files_atomic(out_dir, files)
    return [out_dir / name for name in sorted(files)]
