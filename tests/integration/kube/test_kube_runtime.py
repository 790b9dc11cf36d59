"""The kubernetes runtime on the emulated cluster: deploy, reload, scale, stop, and a failed
reload or rollout leaves what served before serving
(README: Kubernetes, tier 2; the harness: kube_env.py).
"""

from __future__ import annotations

import pytest

from tests.helpers.requires import require_module

require_module("kubernetes")

from orchestrator.errors import RuntimeFailure  # noqa: E402
from tests.helpers.kube_cluster import CONFIG_MAPS, DEPLOYMENTS  # noqa: E402
from tests.integration.kube.kube_env import NS, Env  # noqa: E402

pytestmark = pytest.mark.timeout(420)




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
