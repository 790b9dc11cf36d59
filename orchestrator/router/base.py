"""The router interface: how a rollout splits traffic, apart from where replicas run.

Flagger keeps the workload controller and the router apart; so does this package. A runtime
starts and stops replicas (`orchestrator.runtime.base.Runtime`); a router only learns where the
canary replicas listen and how much traffic they get. HAProxy (`router.haproxy`) is the one
today; a Kubernetes Service or Gateway route is another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

ROLES = ("stable", "canary")


def check_weights(weights: Mapping[str, int]) -> tuple[int, int]:
    """(stable, canary) from a weights mapping, refusing what no router can apply."""
    unknown = set(weights) - set(ROLES)
    stable, canary = int(weights.get("stable", 100 - int(weights.get("canary", 0)))), int(weights.get("canary", 0))
    if unknown or stable < 0 or canary < 0 or stable + canary != 100:
        raise ValueError(f"weights must be {{'stable': S, 'canary': C}} with S + C = 100, not {dict(weights)}")
    return stable, canary


class Backend(Protocol):
    """Where a router reaches one replica (`runtime.base.Replica` is one)."""

    @property
    def host(self) -> str: ...

    @property
    def rest_port(self) -> int: ...

    @property
    def grpc_port(self) -> int: ...


@runtime_checkable
class Router(Protocol):
    """One deployment's traffic split between its `stable` and `canary` replicas."""

    def set_weights(self, weights: Mapping[str, int]) -> None:
        """Percent of requests per role (keys `stable`, `canary`; they sum to 100)."""

    def get_weights(self) -> dict[str, int]:
        """The split the router applies now."""

    def endpoint(self) -> tuple[str, int, int]:
        """(host, rest_port, grpc_port) that clients use."""

    def route_canary(self, replicas: Sequence[Backend], version: int | None = None) -> None:
        """Send the canary share to these replicas (at weight 0 until `set_weights`); returns once
        the router sees them serving `version`. A router that finds canaries by label may no-op."""

    def set_stable_version(self, version: int) -> None:
        """The version stable replicas must have AVAILABLE to get traffic (after a promotion)."""

    def drain_canary(self) -> None:
        """Canary share back to 0 and no request left in flight to a canary."""

    def close(self) -> None:
        """Release what this handle holds (the router itself keeps running with its deployment)."""
