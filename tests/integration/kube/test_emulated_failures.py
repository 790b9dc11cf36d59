"""The harness's failure cases, as the coming runtime will see them through the official client:
a Pending pod for want of a GPU, an image that cannot be pulled, a crash-looping server (with
its real log tail). Scheduling and pulls are simulated; the crash is a real server exiting."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.requires import require_module

require_module("kubernetes")
from kubernetes import client  # noqa: E402

from orchestrator.kube import manifests  # noqa: E402
from orchestrator.spec import parse_spec  # noqa: E402
from tests.helpers.kube_cluster import EmulatedApiServer, NodeAgent  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def _apply(api: EmulatedApiServer, tmp_path: Path, text: str, *, args: list[str] | None = None) -> tuple[
        client.CoreV1Api, str]:
    spec = parse_spec(text, file=tmp_path / "kf.yaml", check_files=False)
    objs = {o["kind"]: o for o in manifests.render(spec)}
    if args is not None:
        objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"] += args
    api_client = client.ApiClient(api.client_configuration())
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    core.create_namespaced_config_map("default", objs["ConfigMap"])
    apps.create_namespaced_deployment("default", objs["Deployment"])
    return core, "io.tfso/deployment=kf"


def _pod(node: NodeAgent, core: client.CoreV1Api, selector: str, cond, what: str):  # type: ignore[no-untyped-def]
    def check():  # type: ignore[no-untyped-def]
        pods = core.list_namespaced_pod("default", label_selector=selector).items
        return pods[0] if pods and cond(pods[0]) else None

    return node.wait(check, timeout_s=120, what=what)


def _events(core: client.CoreV1Api, pod: str) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in core.list_namespaced_event("default").items
            if e.involved_object.name == pod]


def test_pending_for_want_of_a_gpu(tmp_path: Path) -> None:
    with EmulatedApiServer() as api, NodeAgent(api, gpus=0) as node:
        core, sel = _apply(api, tmp_path, "model_uri: gs://b-1/kf\ndevice: gpu\ngpu: {count: 1}\n")
        pod = _pod(node, core, sel, lambda p: p.status.conditions, "an unschedulable pod")
        assert pod.status.phase == "Pending"
        assert pod.status.conditions[0].reason == "Unschedulable"
        assert ("FailedScheduling", "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.") in \
            _events(core, pod.metadata.name)


def test_image_pull_back_off_names_the_image(tmp_path: Path) -> None:
    with EmulatedApiServer() as api, NodeAgent(api, images={"tensorflow/serving:2.19.0"}) as node:
        core, sel = _apply(api, tmp_path, "model_uri: image://registry.example.com/m/kf:9\n")
        pod = _pod(node, core, sel, lambda p: p.status.container_statuses, "a pod that cannot pull")
        assert pod.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
        (reason, message), = _events(core, pod.metadata.name)
        assert reason == "Failed" and "registry.example.com/m/kf:9" in message


def test_crash_loop_shows_the_real_servers_log_tail(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "kf").mkdir(parents=True)
    with EmulatedApiServer() as api, NodeAgent(api, claims={"store": store}) as node:
        core, sel = _apply(api, tmp_path, "model_uri: pvc://store/kf\n", args=["--no_such_flag=1"])
        pod = _pod(node, core, sel, lambda p: p.status.container_statuses
                   and p.status.container_statuses[0].state.waiting, "a crash-looping pod")
        status = pod.status.container_statuses[0]
        assert status.state.waiting.reason == "CrashLoopBackOff"
        assert status.last_state.terminated.exit_code != 0
        assert "no_such_flag" in core.read_namespaced_pod_log(pod.metadata.name, "default")
        tail = core.read_namespaced_pod_log(pod.metadata.name, "default", tail_lines=3)
        assert len(tail.splitlines()) == 3
