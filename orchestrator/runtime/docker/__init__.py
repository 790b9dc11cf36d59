"""The Docker runtime: one `tensorflow/serving` container per replica, driven by the Docker SDK.

By concern: `api` wraps the Docker SDK (errors named, with fixes); `templates` turns specs into
container requests (pure, shared with `tfsctl compose`); `router` is the HAProxy container;
`runtime` converges containers to the specs.
"""

from orchestrator.runtime.docker.api import DockerUnavailable, GpuUnavailable, ImageMissing
from orchestrator.runtime.docker.router import DockerHAProxyRouter
from orchestrator.runtime.docker.runtime import DockerRuntime, docker_usable
from orchestrator.runtime.docker.templates import (
    CONFIG_TARGET,
    LABEL_CANARY,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    LABEL_REPLICA,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    container_template,
    effective_specs,
    replica_request,
)

__all__ = [
    "CONFIG_TARGET",
    "LABEL_CANARY",
    "LABEL_DEPLOYMENT",
    "LABEL_MANAGED_BY",
    "LABEL_REPLICA",
    "LABEL_ROLE",
    "LABEL_SPEC_HASH",
    "DockerHAProxyRouter",
    "DockerRuntime",
    "DockerUnavailable",
    "GpuUnavailable",
    "ImageMissing",
    "container_template",
    "docker_usable",
    "effective_specs",
    "replica_request",
]
