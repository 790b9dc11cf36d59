"""Against a real cluster, when TFSO_E2E_KUBECONFIG names a kubeconfig (kind or k3d; README:
Kubernetes). Skipped otherwise: no cluster can run on the machines this project is built on.

Today: every rendered object is sent to the real API server as a server-side apply dry run
(field manager tfsctl), so admission, defaulting and the CRDs' CEL rules judge exactly what
`tfsctl render` writes. The deploy / reload / rollout flow joins when the runtime lands.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers.requires import require_module

KUBECONFIG = os.environ.get("TFSO_E2E_KUBECONFIG")
pytestmark = [
    pytest.mark.skipif(not KUBECONFIG, reason="set TFSO_E2E_KUBECONFIG to a kind/k3d cluster's kubeconfig"),
    pytest.mark.timeout(300),
]


def test_rendered_manifests_pass_a_server_side_apply_dry_run() -> None:
    require_module("kubernetes")
    from kubernetes import client, config, dynamic
    from kubernetes.client import ApiException

    from tests.unit.kube.test_manifests import VARIANTS, objects

    api_client = config.new_client_from_config(config_file=KUBECONFIG)
    dyn = dynamic.DynamicClient(api_client)
    core = client.CoreV1Api(api_client)
    made: list[str] = []
    skipped: list[str] = []
    try:
        for variant in sorted(VARIANTS):
            for name, obj in objects(variant).items():
                ns = obj["metadata"]["namespace"]
                try:
                    core.read_namespace(ns)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    core.create_namespace({"metadata": {"name": ns}})
                    made.append(ns)
                try:
                    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
                except dynamic.exceptions.ResourceNotFoundError:
                    skipped.append(f"{variant}/{name}: CRD {obj['kind']} not installed")
                    continue
                dyn.server_side_apply(resource, body=obj, namespace=ns, field_manager="tfsctl",
                                      dry_run="All", force_conflicts=True)
    finally:
        for ns in made:  # only namespaces this test created
            core.delete_namespace(ns)
    if skipped:
        print("not checked on this cluster:", *skipped, sep="\n  ")


MODEL_URI = os.environ.get("TFSO_E2E_MODEL_URI")


@pytest.mark.skipif(not MODEL_URI, reason="set TFSO_E2E_MODEL_URI to a model_uri the cluster can read that "
                    "holds half_plus_two versions 1 and 2 (README: Kubernetes, real cluster)")
@pytest.mark.timeout(1800)
def test_the_runtime_flow_on_a_real_cluster(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """deploy, status, hot reload with a label move, scale, canary by replica ratio, stop: the
    flows the emulated suite runs, here against real scheduling, kubelet and rolling updates."""
    require_module("kubernetes")
    import uuid

    from kubernetes import client, config

    from orchestrator.runtime.kubernetes import KubernetesRuntime
    from orchestrator.spec import parse_spec
    from orchestrator.state import StateStore

    ns = f"tfso-e2e-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(config.new_client_from_config(config_file=KUBECONFIG))
    core.create_namespace({"metadata": {"name": ns}})
    runtime = KubernetesRuntime(StateStore(tmp_path / "state"), kubeconfig=KUBECONFIG)

    def spec(extra: str):  # type: ignore[no-untyped-def]
        text = (f"model_uri: {MODEL_URI}\nkubernetes: {{namespace: {ns}}}\nhealth: {{deadline_s: 600}}\n"
                "router: true\n" + extra)
        return parse_spec(text, file=tmp_path / "half_plus_two.yaml", check_files=False)

    try:
        assert runtime.deploy([spec("version_policy: {specific: [1]}\n")]).action == "created"
        assert all(r.running and r.models[0].available() == {1} for r in runtime.status("half_plus_two"))
        pods = [r.name for r in runtime.replicas("half_plus_two")]
        reloaded = runtime.deploy([spec("version_policy: {specific: [1, 2]}\nversion_labels: {stable: 2}\n")])
        assert reloaded.action == "reloaded"
        assert [r.name for r in runtime.replicas("half_plus_two")] == pods  # in place, no restart
        runtime.scale("half_plus_two", 2)
        assert len(runtime.replicas("half_plus_two")) == 2
        (canary,) = runtime.start_canary("half_plus_two", 2)
        assert canary.role == "canary"
        router = runtime.router("half_plus_two")
        router.set_weights({"stable": 100, "canary": 0})
        assert router.get_weights() == {"stable": 100, "canary": 0}
        runtime.remove_canary("half_plus_two")
        assert runtime.stop("half_plus_two")
    finally:
        core.delete_namespace(ns)
