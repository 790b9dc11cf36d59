"""The kubernetes runtime's canary verbs on the emulated cluster: by replica ratio and by Gateway
route weights
(README: Kubernetes, tier 2; the harness: kube_env.py).
"""

from __future__ import annotations

import pytest

from tests.helpers.requires import require_module

require_module("kubernetes")

from orchestrator.errors import RuntimeFailure  # noqa: E402
from orchestrator.runtime.kubernetes import ReplicaRatio  # noqa: E402
from tests.helpers.kube_cluster import DEPLOYMENTS  # noqa: E402
from tests.integration.kube.kube_env import NS, Env  # noqa: E402

pytestmark = pytest.mark.timeout(420)




def test_canary_by_replica_ratio(env: Env) -> None:
    rt = env.runtime
    rt.deploy([env.spec("version_policy: {specific: [1]}\nrouter: true\n")])
    (canary,) = rt.start_canary("khp", 2)
    assert canary.role == "canary" and canary.version == 2
    assert env.states(canary.name) == {2: "AVAILABLE"}
    (stable_pod,) = env.pods("stable")
    assert env.states(stable_pod) == {1: "AVAILABLE"}
    router = rt.router("khp")
    assert isinstance(router, ReplicaRatio)
    assert router.get_weights() == {"stable": 50, "canary": 50}  # 1 stable pod + 1 canary pod
    assert router.split(10) == (1, 1)  # 2 pods in all: 50 % steps, never 0 pods for a live share
    router.set_weights({"stable": 100, "canary": 0})  # canary scaled to 0, stable to 2
    assert router.get_weights() == {"stable": 100, "canary": 0}
    assert not env.pods("canary") and len(env.pods("stable")) == 2
    # deploy again mid-canary (as promotion does): the split's stable count is kept, not reset to 1
    assert rt.deploy([env.spec("version_policy: {specific: [1]}\nrouter: true\n")]).action == "unchanged"
    assert env.api.get(DEPLOYMENTS, NS, "khp")["spec"]["replicas"] == 2
    rt.remove_canary("khp")
    rt.remove_canary("khp")  # idempotent
    assert env.api.get(DEPLOYMENTS, NS, "khp-canary") is None
    env.node.wait(lambda: not env.pods("canary"), timeout_s=60, what="the canary pods to go")
    assert env.pods("stable") == [stable_pod] and env.states(stable_pod) == {1: "AVAILABLE"}


def test_canary_by_gateway_route_weights(env: Env) -> None:
    rt = env.runtime
    with pytest.raises(RuntimeFailure, match="Gateway 'gw' not found"):
        rt.deploy([env.spec("version_policy: {specific: [1]}\nrouter: {gateway: gw}\n")])
    env.api.put("/apis/gateway.networking.k8s.io/v1/gateways", NS, {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
        "spec": {"gatewayClassName": "any", "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]},
        "status": {"addresses": [{"type": "IPAddress", "value": "10.0.0.7"}]}}, create=True)
    rt.deploy([env.spec("version_policy: {specific: [1]}\nrouter: {gateway: gw}\n")])
    router = rt.router("khp")
    assert router.get_weights() == {"stable": 100, "canary": 0}
    assert router.endpoint() == ("10.0.0.7", 8080, 8080)
    rt.start_canary("khp", 2)
    router.set_weights({"stable": 90, "canary": 10})
    assert router.get_weights() == {"stable": 90, "canary": 10}
    for plural in ("httproutes", "grpcroutes"):
        route = env.api.get(f"/apis/gateway.networking.k8s.io/v1/{plural}", NS, "khp")
        assert route is not None
        assert [(r["name"], r["weight"]) for r in route["spec"]["rules"][0]["backendRefs"]] == \
            [("khp-stable", 90), ("khp-canary", 10)]
    # deploy again mid-canary: the rollout's weights stay (a fresh render would say 100 % stable)
    assert rt.deploy([env.spec("version_policy: {specific: [1]}\nrouter: {gateway: gw}\n")]).action == "unchanged"
    assert router.get_weights() == {"stable": 90, "canary": 10}
    metrics = rt.pod_metrics("khp", "canary")  # what canary analysis reads, through the pod proxy
    assert len(metrics) == 1 and "# TYPE" in next(iter(metrics.values()))
    # a canary that cannot load its version is removed; stable never changed
    with pytest.raises(RuntimeFailure):
        rt.start_canary("khp", 3)
    assert env.api.get(DEPLOYMENTS, NS, "khp-canary") is None
    assert router.get_weights() == {"stable": 100, "canary": 0}
