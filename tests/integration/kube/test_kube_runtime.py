"""The kubernetes runtime end to end on the emulated cluster (README: Kubernetes, tier 2).

The runtime reaches the emulated API server through a kubeconfig file and the unmodified
official client; the node agent's pods are REAL `tfs-model-server` processes reading the
model from a "claim" folder, so AVAILABLE, hot reloads and crashes are a real server's. Only
scheduling, image pulls and networking are simulated (a cluster cannot run on these machines).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.requires import require_module

require_module("kubernetes")

from orchestrator.errors import RuntimeFailure  # noqa: E402
from orchestrator.runtime.kubernetes import KubernetesRuntime, ReplicaRatio  # noqa: E402
from orchestrator.spec import Spec, parse_spec  # noqa: E402
from orchestrator.state import StateStore  # noqa: E402
from tests.helpers.kube_cluster import CONFIG_MAPS, DEPLOYMENTS, EmulatedApiServer, NodeAgent  # noqa: E402
from tests.helpers.server import export_half_plus_two_tf1, write_corrupt_version  # noqa: E402

pytestmark = pytest.mark.timeout(420)
NS = "models"


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("claim")
    export_half_plus_two_tf1(store / "khp", versions=(1,))
    export_half_plus_two_tf1(store / "khp", versions=(2,), b=3.0)
    write_corrupt_version(store / "khp", 3)  # every spec here names its versions, so 3 loads only when asked
    return store


def write_kubeconfig(path: Path, server: str) -> str:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulated",
        "clusters": [{"name": "emulated", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "not-checked"}}],
        "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "tester"}}],
    }))
    return str(path)


class Env:
    def __init__(self, tmp: Path, api: EmulatedApiServer, node: NodeAgent, store: Path) -> None:
        self.tmp, self.api, self.node, self.store = tmp, api, node, store
        self.runtime = KubernetesRuntime(StateStore(tmp / "state"),
                                         kubeconfig=write_kubeconfig(tmp / "kubeconfig", api.url), poll_s=0.2)

    def spec(self, extra: str = "", *, name: str = "khp") -> Spec:
        text = (f"model_uri: pvc://model-store/{name}\nbase_path: {self.store / name}\n"
                f"kubernetes: {{namespace: {NS}}}\nhealth: {{deadline_s: 180}}\n" + extra)
        return parse_spec(text, file=self.tmp / f"{name}.yaml", check_files=False)

    def pods(self, role: str | None = None) -> list[str]:
        sel = "io.tfso/deployment=khp" + (f",io.tfso/role={role}" if role else "")
        return [p["metadata"]["name"] for p in self.api.items("/api/v1/pods", NS, sel)]

    def states(self, pod: str, model: str = "khp") -> dict[int, str]:
        code, body = self.runtime.cluster(None).proxy_get(NS, pod, 8501, f"v1/models/{model}")
        assert code == 200, body
        return {int(v["version"]): v["state"] for v in json.loads(body)["model_version_status"]}


@pytest.fixture
def env(tmp_path: Path, model_store: Path) -> Iterator[Env]:
    with EmulatedApiServer(namespaces=("default", NS)) as api, \
            NodeAgent(api, claims={"model-store": model_store}, crash_images={"tensorflow/serving:crash"}) as node:
        yield Env(tmp_path, api, node, model_store)


def test_deploy_status_reload_scale_logs_stop(env: Env) -> None:
    rt = env.runtime
    first = rt.deploy([env.spec("version_policy: {specific: [1]}\n")])
    assert first.action == "created" and first.runtime == "kubernetes"
    assert first.rest_url == "http://khp.models.svc.cluster.local:8501"
    assert env.api.watches > 0 and env.runtime.watch  # it waited for the pod with a watch
    (pod,) = env.pods("stable")
    assert env.states(pod) == {1: "AVAILABLE"}
    dep = env.api.get(DEPLOYMENTS, NS, "khp")
    assert dep is not None and dep["metadata"]["managedFields"][0]["manager"] == "tfsctl"
    (status,) = rt.status("khp")
    assert status.running and status.models[0].available() == {1}
    assert rt.deploy([env.spec("version_policy: {specific: [1]}\n")]).action == "unchanged"

    # versions change: the ConfigMap is updated in place and the same pod loads version 2
    reloaded = rt.deploy([env.spec("version_policy: {specific: [1, 2]}\nversion_labels: {stable: 1}\n")])
    assert reloaded.action == "reloaded"
    assert env.pods("stable") == [pod]  # no restart
    assert env.states(pod) == {1: "AVAILABLE", 2: "AVAILABLE"}
    # the label moves to 2 (already AVAILABLE); the ConfigMap holds the new label
    assert rt.reload([env.spec("version_policy: {specific: [1, 2]}\nversion_labels: {stable: 2}\n")]).action \
        == "reloaded"
    cm = env.api.get(CONFIG_MAPS, NS, "khp-config")
    assert cm is not None and "value: 2" in cm["data"]["models.config"].split("version_labels")[1]

    scaled = rt.scale("khp", 2)
    assert scaled.action == "scaled" and len(env.pods("stable")) == 2
    assert all(env.states(p) == {1: "AVAILABLE", 2: "AVAILABLE"} for p in env.pods("stable"))
    logs = rt.logs("khp", tail=5)
    assert len(logs) == 2 and all(len(text.splitlines()) <= 6 for text in logs.values())
    rows = rt.ps("khp")
    assert [r["status"] for r in rows] == ["running", "running"] and rows[0]["image"] == "tensorflow/serving:2.19.0"

    # stop deletes only what carries our labels
    env.api.put(CONFIG_MAPS, NS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "theirs"},
                                  "data": {}}, create=True)
    gone = rt.stop("khp")
    assert {"Deployment/khp", "ConfigMap/khp-config", "Service/khp", "PodDisruptionBudget/khp"} <= set(gone)
    assert env.api.get(CONFIG_MAPS, NS, "theirs") is not None
    env.node.wait(lambda: not env.pods(), timeout_s=60, what="the pods to go")
    with pytest.raises(RuntimeFailure, match="no kubernetes deployment named 'khp'"):
        rt.status("khp")


def test_a_failed_reload_puts_the_old_config_back(env: Env) -> None:
    env.runtime.deploy([env.spec("version_policy: {specific: [1]}\n")])
    before = env.api.get(CONFIG_MAPS, NS, "khp-config")
    with pytest.raises(RuntimeFailure, match="version failed to load"):
        env.runtime.deploy([env.spec("version_policy: {specific: [1, 3]}\n")])
    after = env.api.get(CONFIG_MAPS, NS, "khp-config")
    assert before is not None and after is not None and after["data"] == before["data"]
    (pod,) = env.pods("stable")
    assert env.states(pod)[1] == "AVAILABLE"  # version 1 served throughout
    # TF Serving keeps reporting the failed version as END; the restored config no longer asks for it
    assert "3" not in after["data"]["models.config"].split("specific")[1]


def test_a_crashing_rollout_names_crash_loop_and_leaves_the_old_pods_serving(env: Env) -> None:
    env.api.can_watch = False  # an API server that cannot watch: the runtime must poll instead
    env.runtime.deploy([env.spec("version_policy: {specific: [1]}\n")])
    assert env.runtime.watch is False and env.api.watches == 0
    (pod,) = env.pods("stable")
    with pytest.raises(RuntimeFailure) as info:
        env.runtime.deploy([env.spec("version_policy: {specific: [1]}\ntag: crash\n")])
    text = str(info.value)
    assert "CrashLoopBackOff" in text and "fix:" in text
    assert "no_such_flag_in_this_image" in text  # the real server's last log lines
    dep = env.api.get(DEPLOYMENTS, NS, "khp")
    assert dep is not None and dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":2.19.0")
    env.node.wait(lambda: env.pods("stable") == [pod], timeout_s=60, what="only the old pod again")
    assert env.states(pod) == {1: "AVAILABLE"}


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


def test_cli_deploy_status_ls_stop_and_a_local_only_spec(env: Env, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "khp.yaml").write_text(f"model_uri: pvc://model-store/khp\nbase_path: {env.store / 'khp'}\n"
                                      "version_policy: {specific: [1]}\nhealth: {deadline_s: 180}\n"
                                      "autoscale: {min: 1, max: 2}\nresources: {cpus: 0.5}\n")
    (configs / "plain.yaml").write_text(f"base_path: {env.store / 'khp'}\n")
    run_env = {**os.environ, "KUBECONFIG": env.runtime.kubeconfig or "", "TFSO_STATE_DIR": str(tmp_path / "cli")}

    def tfsctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                              timeout=240, check=False, env=run_env, cwd=tmp_path)

    deployed = tfsctl("deploy", "khp", "--runtime", "kubernetes", "--namespace", NS, "--configs-dir", str(configs),
                      "-o", "json")
    assert deployed.returncode == 0, deployed.stderr
    assert json.loads(deployed.stdout)["action"] == "created"
    status = tfsctl("status", "khp")
    assert status.returncode == 0 and "AVAILABLE" in status.stdout, status.stdout + status.stderr
    moved = tfsctl("deploy", "khp", "--runtime", "kubernetes", "--configs-dir", str(configs))  # namespace default
    assert moved.returncode == 4 and "is deployed in namespace models, not default" in moved.stderr, moved.stderr
    # reload finds it where it lives (the spec file names no namespace); autoscale is fine on a cluster
    reloaded = tfsctl("reload", "khp", "--configs-dir", str(configs), "-o", "json")
    assert reloaded.returncode == 0 and json.loads(reloaded.stdout)["action"] == "unchanged", reloaded.stderr
    scaled = tfsctl("scale", "khp", "3")
    assert scaled.returncode == 4 and "is autoscaled" in scaled.stderr and "fix:" in scaled.stderr
    listed = json.loads(tfsctl("ls", "-o", "json").stdout)["deployments"]
    assert [(d["name"], d["runtime"]) for d in listed] == [("khp", "kubernetes")]
    assert tfsctl("stop", "khp").returncode == 0
    refused = tfsctl("deploy", "plain", "--runtime", "kubernetes", "--configs-dir", str(configs))
    assert refused.returncode == 2 and "error:" in refused.stderr and "model_uri" in refused.stderr
    assert "tfsctl package plain" in refused.stderr
    misuse = tfsctl("deploy", "plain", "--runtime", "local", "--namespace", NS, "--configs-dir", str(configs))
    assert misuse.returncode == 2 and "--namespace go with --runtime kubernetes" in misuse.stderr
