"""The test harness for the kubernetes runtime, proved with the unmodified official client.

No cluster can run here (README: Kubernetes). The emulated API server speaks real HTTP and
the node agent turns the Deployment we render into a REAL `tfs-model-server` process, so the
model status read through the pod proxy comes from a server that loaded the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.requires import require_module

require_module("kubernetes")
from kubernetes import client  # noqa: E402

from orchestrator.kube import manifests  # noqa: E402
from orchestrator.spec import parse_spec  # noqa: E402
from tests.helpers.kube_cluster import EmulatedApiServer, NodeAgent  # noqa: E402
from tests.helpers.server import export_half_plus_two_tf1  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def _render(tmp_path: Path, text: str) -> dict[str, dict]:
    spec = parse_spec(text, file=tmp_path / "khp.yaml", check_files=False)
    return {o["kind"]: o for o in manifests.render(spec)}


def _model_status(core: client.CoreV1Api, pod: str) -> dict:
    raw = core.connect_get_namespaced_pod_proxy_with_path(
        f"{pod}:8501", "models", "v1/models/khp", _preload_content=False)
    return json.loads(raw.data)


def test_official_client_deploys_and_reads_model_status_through_the_pod_proxy(tmp_path: Path) -> None:
    store = tmp_path / "store"
    export_half_plus_two_tf1(store / "khp", versions=(1,))
    objs = _render(tmp_path, "model_uri: pvc://model-store/khp\nversion_policy: all\n"
                             "kubernetes: {namespace: models}\nhealth: {deadline_s: 60}\n")
    with EmulatedApiServer(namespaces=("default",)) as api, \
            NodeAgent(api, claims={"model-store": store}) as node:
        api_client = client.ApiClient(api.client_configuration())
        core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        # a missing namespace is the real API server's 404, seen by the official client
        with pytest.raises(client.ApiException) as info:
            core.create_namespaced_config_map("models", objs["ConfigMap"])
        assert info.value.status == 404
        assert json.loads(info.value.body)["message"] == 'namespaces "models" not found'
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "models"}})
        core.create_namespaced_config_map("models", objs["ConfigMap"])
        created = apps.create_namespaced_deployment("models", objs["Deployment"])
        assert created.metadata.uid and created.metadata.generation == 1
        with pytest.raises(client.ApiException) as info:
            apps.create_namespaced_deployment("models", objs["Deployment"])
        assert info.value.status == 409

        def ready() -> bool:
            dep = apps.read_namespaced_deployment("khp", "models")
            return bool(dep.status and dep.status.ready_replicas == 1)

        node.wait(ready, timeout_s=120, what="the Deployment's pod to be Ready")
        pods = core.list_namespaced_pod("models", label_selector="io.tfso/deployment=khp,io.tfso/role=stable")
        (pod,) = pods.items
        assert pod.status.phase == "Running"
        assert core.list_namespaced_pod("models", label_selector="io.tfso/deployment=other").items == []
        status = _model_status(core, pod.metadata.name)
        assert status["model_version_status"][0]["version"] == "1"
        assert status["model_version_status"][0]["state"] == "AVAILABLE"

        # hot reload: a new version folder and a ConfigMap edit (merge patch) reach the pod
        export_half_plus_two_tf1(store / "khp", versions=(2,), b=3.0)
        spec2 = parse_spec("model_uri: pvc://model-store/khp\nversion_policy: {specific: [1, 2]}\n"
                           "version_labels: {stable: 1}\nkubernetes: {namespace: models}\n",
                           file=tmp_path / "khp.yaml", check_files=False)
        cm2 = manifests.render(spec2)[0]
        core.patch_namespaced_config_map("khp-config", "models", {"data": cm2["data"]})

        def both_available() -> bool:
            states = {s["version"]: s["state"] for s in _model_status(core, pod.metadata.name)["model_version_status"]}
            return states == {"1": "AVAILABLE", "2": "AVAILABLE"}

        node.wait(both_available, timeout_s=120, what="versions 1 and 2 AVAILABLE after the ConfigMap edit")
        same = core.list_namespaced_pod("models", label_selector="io.tfso/deployment=khp").items
        assert [p.metadata.name for p in same] == [pod.metadata.name]  # reloaded in place, no restart

        apps.delete_namespaced_deployment("khp", "models")
        node.wait(lambda: not core.list_namespaced_pod("models").items, timeout_s=60,
                  what="the pods to go with their Deployment")
