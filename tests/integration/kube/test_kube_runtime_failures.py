"""The kubernetes runtime's named failures on the emulated cluster: a Pending pod for want of a
GPU, an image pull failure, and cluster access (kubeconfig, API server, RBAC, namespace)
(README: Kubernetes, tier 2; the harness: kube_env.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.requires import require_module

require_module("kubernetes")

from orchestrator.errors import RuntimeFailure  # noqa: E402
from orchestrator.runtime.kubernetes import KubernetesRuntime  # noqa: E402
from orchestrator.spec import parse_spec  # noqa: E402
from orchestrator.state import StateStore  # noqa: E402
from tests.integration.kube.kube_env import Env, write_kubeconfig  # noqa: E402

pytestmark = pytest.mark.timeout(420)




def test_pending_for_a_gpu_and_image_pull_failures_are_named(env: Env, tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure) as info:
        env.runtime.deploy([env.spec("device: gpu\ngpu: {count: 1}\nversion_policy: {specific: [1]}\n")])
    assert "Pending (unschedulable)" in info.value.message and "Insufficient nvidia.com/gpu" in info.value.message
    assert "GPU node pool" in (info.value.fix or "")
    env.runtime.stop("khp")
    env.node.images = {"tensorflow/serving:2.19.0"}
    with pytest.raises(RuntimeFailure) as info:
        env.runtime.deploy([env.spec("tag: 9.9.9\nversion_policy: {specific: [1]}\n")])
    assert "ImagePullBackOff" in info.value.message and "tensorflow/serving:9.9.9" in info.value.message


def test_cluster_access_errors_name_the_fix(env: Env, tmp_path: Path) -> None:
    spec = env.spec("version_policy: {specific: [1]}\n")
    missing = KubernetesRuntime(StateStore(tmp_path / "s1"), kubeconfig=str(tmp_path / "nope"))
    with pytest.raises(RuntimeFailure, match="no kubeconfig at") as info:
        missing.deploy([spec])
    assert "KUBECONFIG" in (info.value.fix or "")
    down = KubernetesRuntime(StateStore(tmp_path / "s2"),
                             kubeconfig=write_kubeconfig(tmp_path / "down", "http://127.0.0.1:9"))
    with pytest.raises(RuntimeFailure, match="cannot reach the Kubernetes API server"):
        down.deploy([spec])
    env.api.forbidden.add(("patch", "deployments"))
    with pytest.raises(RuntimeFailure, match="forbidden by the cluster's RBAC") as info:
        env.runtime.deploy([spec])
    assert "kubectl auth can-i" in (info.value.fix or "")
    env.api.forbidden.clear()
    other = parse_spec(f"model_uri: pvc://model-store/khp\nbase_path: {env.store / 'khp'}\n"
                       "kubernetes: {namespace: nowhere}\nversion_policy: {specific: [1]}\n",
                       file=tmp_path / "khp.yaml", check_files=False)
    with pytest.raises(RuntimeFailure, match="namespace 'nowhere' does not exist") as info:
        KubernetesRuntime(StateStore(tmp_path / "s3"), kubeconfig=env.runtime.kubeconfig).deploy([other])
    assert "kubectl create namespace nowhere" in (info.value.fix or "")
    local = parse_spec(f"base_path: {env.store / 'khp'}\n", file=tmp_path / "khp.yaml")
    with pytest.raises(Exception, match="model_uri"):
        env.runtime.deploy([local])
