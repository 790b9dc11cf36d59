"""Pure: specs -> the container requests the Docker runtime and `tfsctl compose` create.

Each replica is created from a `ContainerRequest` that is a pure function of the specs (see
`container_template`): image `<image>:<tag>` (`-gpu` and a GPU device request for `device: gpu`),
the Plan's exact flags as the container command (after the official entrypoint's own), every
model folder mounted read-only at `/models/<name>`, the rendered config folder read-only at
`/config`, ports published on the spec's host (127.0.0.1), a restart policy, CPU and memory
limits, and labels that mark the container as ours:

    io.tfso.managed-by=tfsctl  io.tfso.deployment=NAME  io.tfso.replica=I  io.tfso.spec-hash=H

Nothing here talks to a daemon, so Compose renders the same containers the runtime starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from orchestrator.plan import Plan, build_plan, container_model_path
from orchestrator.runtime.base import digest
from orchestrator.runtime.docker.api import ContainerRequest, Mount
from orchestrator.spec import Spec

LABEL_MANAGED_BY = "io.tfso.managed-by"
LABEL_DEPLOYMENT = "io.tfso.deployment"
LABEL_REPLICA = "io.tfso.replica"
LABEL_SPEC_HASH = "io.tfso.spec-hash"
LABEL_MODELS = "io.tfso.models"
LABEL_ROLE = "io.tfso.role"  # router | canary; replicas carry LABEL_REPLICA instead
LABEL_CANARY = "io.tfso.canary-replica"
ROLE_ROUTER, ROLE_CANARY = "router", "canary"
MANAGER = "tfsctl"

CONFIG_TARGET = "/config"
GRPC_INSIDE, REST_INSIDE = 8500, 8501  # the official image's ports
GPU_SHARE = 0.9  # of a GPU's memory split between replicas that share it



def effective_specs(specs: Sequence[Spec]) -> list[Spec]:
    """Specs as the containers run them: replicas sharing GPUs split their memory.

    With `device: gpu`, every replica gets the same GPUs (`count: all` or the first N), so
    when there are several and the spec sets no `memory_fraction`, each gets an equal share
    (`--per_process_gpu_memory_fraction`) instead of the first one taking it all.
    """
    main = specs[0]
    if main.device != "gpu" or main.replicas < 2 or main.gpu.memory_fraction:
        return list(specs)
    share = int(GPU_SHARE / main.replicas * 100) / 100
    gpu = main.gpu.model_copy(update={"memory_fraction": share})
    return [s.model_copy(update={"gpu": gpu}) for s in specs]


def container_plan(specs: Sequence[Spec]) -> Plan:
    """The Plan as a container sees it: config in /config, models in /models/<name>, 8500/8501.

    Without `logging_config`: `tensorflow/serving` cannot log payloads (it refuses the config),
    so under docker the router captures them (orchestrator.router.capture)."""
    specs = [s.model_copy(update={"logging": None}) if s.logging is not None else s for s in specs]
    return build_plan(specs, config_dir=CONFIG_TARGET, model_path=container_model_path,
                      grpc_port=GRPC_INSIDE, rest_port=REST_INSIDE)


def container_template(specs: Sequence[Spec], config_dir: Path | str, *, plan: Plan | None = None,
                       manager: str = MANAGER, host_mounts: Sequence[Mount] = ()) -> ContainerRequest:
    """The request every replica of `specs` is created from, without name, ports or replica label.

    `host_mounts`: more read-only host folders (the runtime's, never a spec's; see DockerRuntime)."""
    main = specs[0]
    plan = plan or container_plan(specs)
    mounts = [Mount(str(s.base_path), container_model_path(s)) for s in specs]
    mounts.append(Mount(str(config_dir), CONFIG_TARGET))
    mounts += host_mounts
    return ContainerRequest(
        image=main.image_ref,
        command=tuple(plan.args),
        labels={LABEL_MANAGED_BY: manager, LABEL_DEPLOYMENT: main.name,
                LABEL_MODELS: ",".join(s.name for s in specs)},
        environment={"MODEL_NAME": main.name, **plan.env},
        mounts=tuple(mounts),
        restart=main.restart,
        nano_cpus=int(main.resources.cpus * 1e9) if main.resources.cpus else None,
        mem_limit=main.resources.memory,
        gpus=main.gpu.count if main.device == "gpu" else None,
    )


def template_hash(template: ContainerRequest, spec: Spec) -> str:
    """What forces a replacement when it changes: the container itself and replica 0's ports.

    Behind a router no replica uses the spec's ports (the router does), so they do not count;
    turning the router on or off does, since replica 0 moves off or onto those ports.
    """
    if spec.router:
        return digest([template.to_json(), "router"])
    return digest([template.to_json(), spec.ports.model_dump()])


def replica_request(template: ContainerRequest, *, name: str, index: int, host: str,
                    grpc_port: int, rest_port: int, spec_hash: str) -> ContainerRequest:
    labels = {**template.labels, LABEL_REPLICA: str(index), LABEL_SPEC_HASH: spec_hash}
    return dataclasses.replace(template, name=name, labels=labels,
                               ports={GRPC_INSIDE: (host, grpc_port), REST_INSIDE: (host, rest_port)})
