"""`tfsctl rollout` on the emulated cluster by replica ratio, with real traffic
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
    Cli,
    Traffic,
    promote_then_roll_back,
)

pytestmark = pytest.mark.timeout(1200)




def test_rollout_by_replica_ratio_promotes_v2_and_rolls_back_a_failing_v3(
        cluster: tuple[EmulatedApiServer, NodeAgent], krl_store: Path, tmp_path: Path) -> None:
    api, node = cluster
    cli = Cli(tmp_path, api, "true")
    cli.write_spec(krl_store, "true")
    deployed = cli("deploy", "krl", "--runtime", "kubernetes", "--namespace", NS)
    assert deployed.returncode == 0, deployed.stderr
    with Traffic(api, gateway=False) as traffic:
        promote_then_roll_back(cli, node, traffic, "50,100")
    # 1 stable + 1 canary pod: 50 % then 100 % moved real requests onto the canary's v2
    assert any(r[2] == 2 for r in traffic.served("canary"))
