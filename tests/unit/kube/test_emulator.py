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


def _pod(name: str, deployment: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"io.tfso/deployment": deployment}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}


def test_watch_streams_changes_after_a_resource_version_and_ends_at_its_timeout() -> None:
    """The official client's watch: events after the list's resourceVersion, by label selector,
    ended by timeoutSeconds; and the runtime's `watch_pods` wakes on the first change."""
    import threading

    from kubernetes import watch

    from orchestrator.kube.api import Cluster
    from tests.helpers.kube_cluster import PODS

    with EmulatedApiServer() as api:
        core = client.CoreV1Api(client.ApiClient(api.client_configuration()))
        api.put(PODS, "default", _pod("a-0", "a"), create=True)
        listed = core.list_namespaced_pod("default", label_selector="io.tfso/deployment=a")
        rv = listed.metadata.resource_version
        api.put(PODS, "default", _pod("b-0", "b"), create=True)  # another deployment's: not selected
        api.set_status(PODS, "default", "a-0", {"phase": "Running"})
        api.delete(PODS, "default", "a-0")
        events = [(e["type"], e["object"]["metadata"]["name"]) for e in watch.Watch().stream(
            core.list_namespaced_pod, "default", label_selector="io.tfso/deployment=a", resource_version=rv,
            timeout_seconds=1, deserialize=False)]
        assert events == [("MODIFIED", "a-0"), ("DELETED", "a-0")]  # and the server ended the stream

        cluster = Cluster(client.ApiClient(api.client_configuration()), api.url)
        _, rv = cluster.list_pods("default", "io.tfso/deployment=a")
        assert cluster.watch_pods("default", "io.tfso/deployment=a", rv, 1) is False  # nothing changed
        later = threading.Timer(0.3, lambda: api.put(PODS, "default", _pod("a-1", "a"), create=True))
        later.start()
        assert cluster.watch_pods("default", "io.tfso/deployment=a", rv, 30) is True  # woken by the change
        later.join()


def test_watch_pods_says_when_the_server_cannot_watch() -> None:
    """A server that answers ?watch with a plain list: None, so the runtime polls instead."""
    from orchestrator.kube.api import Cluster

    with EmulatedApiServer() as api:
        api.can_watch = False
        cluster = Cluster(client.ApiClient(api.client_configuration()), api.url)
        _, rv = cluster.list_pods("default", "")
        assert cluster.watch_pods("default", "", rv, 1) is None
