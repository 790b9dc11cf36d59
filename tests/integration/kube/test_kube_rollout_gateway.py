"""`tfsctl rollout` on the emulated cluster by Gateway route weights, with real traffic
(README: Kubernetes, rollouts; what the traffic proves: rollout_cluster.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.requires import require_module

require_module("kubernetes")

from tests.helpers.kube_cluster import EmulatedApiServer, NodeAgent  # noqa: E402
from tests.integration.kube.rollout_cluster import (  # noqa: E402
    NS,
    ROUTES,
    Cli,
    Traffic,
    promote_then_roll_back,
)

pytestmark = pytest.mark.timeout(1200)




def test_rollout_by_gateway_weights_promotes_v2_and_rolls_back_a_failing_v3(
        cluster: tuple[EmulatedApiServer, NodeAgent], krl_store: Path, tmp_path: Path) -> None:
    api, node = cluster
    api.put("/apis/gateway.networking.k8s.io/v1/gateways", NS, {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
        "spec": {"gatewayClassName": "any", "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]},
        "status": {"addresses": [{"type": "IPAddress", "value": "10.0.0.7"}]}}, create=True)
    cli = Cli(tmp_path, api, "{gateway: gw}")
    cli.write_spec(krl_store, "{gateway: gw}")
    deployed = cli("deploy", "krl", "--runtime", "kubernetes", "--namespace", NS)
    assert deployed.returncode == 0, deployed.stderr
    with Traffic(api, gateway=True) as traffic:
        promote_then_roll_back(cli, node, traffic, "20,50,100")
    assert any(r[2] == 2 for r in traffic.served("canary"))
    route = api.get(ROUTES, NS, "krl")
    assert route is not None
    assert [(r["name"], r["weight"]) for r in route["spec"]["rules"][0]["backendRefs"]] == [("krl-stable", 100)]
