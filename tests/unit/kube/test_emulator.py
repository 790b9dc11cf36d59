"""The emulated API server's semantics, through the official client (no pods, so fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.requires import require_module

require_module("kubernetes")
from kubernetes import client  # noqa: E402

from orchestrator.kube import manifests  # noqa: E402
from orchestrator.spec import parse_spec  # noqa: E402
from tests.helpers.kube_cluster import EmulatedApiServer  # noqa: E402


def test_server_side_apply_creates_then_updates_and_bumps_generation(tmp_path: Path) -> None:
    spec = parse_spec("model_uri: gs://b-1/m\nreplicas: 2\n", file=tmp_path / "m.yaml", check_files=False)
    dep = next(o for o in manifests.render(spec) if o["kind"] == "Deployment")
    with EmulatedApiServer() as api:
        apps = client.AppsV1Api(client.ApiClient(api.client_configuration()))
        first = apps.patch_namespaced_deployment("m", "default", dep, field_manager="tfsctl", force=True,
                                                 _content_type="application/apply-patch+yaml")
        assert first.spec.replicas == 2 and first.metadata.generation == 1
        dep["spec"]["replicas"] = 3
        second = apps.patch_namespaced_deployment("m", "default", dep, field_manager="tfsctl", force=True,
                                                  _content_type="application/apply-patch+yaml")
        assert second.spec.replicas == 3 and second.metadata.generation == 2
        assert second.metadata.uid == first.metadata.uid
        assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
        # a metadata-only change leaves generation alone, as the real server does
        third = apps.patch_namespaced_deployment("m", "default", {"metadata": {"annotations": {"a": "b"}}})
        assert third.metadata.generation == 2
        assert [d.metadata.name for d in apps.list_namespaced_deployment(
            "default", label_selector="app.kubernetes.io/managed-by=tfsctl").items] == ["m"]
        assert apps.list_namespaced_deployment("default", label_selector="io.tfso/deployment=x").items == []
        with pytest.raises(client.ApiException) as info:
            apps.read_namespaced_deployment("nope", "default")
        assert info.value.status == 404 and json.loads(info.value.body)["reason"] == "NotFound"
        apps.delete_namespaced_deployment("m", "default")
        assert apps.list_namespaced_deployment("default").items == []
