"""`tfsctl monitor up` over a Docker deployment: Prometheus as a CONTAINER scrapes the containers.

The replicas are stand-in containers publishing on 127.0.0.1 behind the router container (the
HAProxy stand-in, whose built-in Prometheus exporter is enabled). Prometheus runs from a local
image built from the host's Debian binary (`docker import`, never pulled), on the host network,
with its folder mounted at the same path. PromQL must count exactly the requests the test sent,
per replica and at the router.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from orchestrator.monitor.container import IMAGE_REPO, MONITOR_LABEL
from orchestrator.runtime.base import free_port
from orchestrator.runtime.docker.api import DockerApi
from tests.helpers.parallel import docker_name
from tests.helpers.rollout import wait_for
from tests.helpers.standin_image import ROUTER_REF, ensure_router_image
from tests.integration.docker.conftest import tfsctl, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.docker]
NAME = docker_name("monc")  # this checkout's; the project fixture stops it, the run's sweep removes leftovers


def test_prometheus_container_scrapes_replicas_and_router(project: Path,
                                                          docker_api: DockerApi) -> None:
    ensure_router_image(docker_api)
    grpc, rest, prom = free_port(), free_port(), free_port()
    write_spec(project, NAME, "base_path: ../models/hpt\nversion_policy: {specific: [1]}\n"
                              f"replicas: 2\nports: {{grpc: {grpc}, rest: {rest}}}\n"
                              f"router: true\nrouter_image: {ROUTER_REF}\n")
    run = tfsctl(project, "deploy", NAME, "--runtime", "docker")
    assert run.returncode == 0, run.stderr
    url = f"http://127.0.0.1:{prom}"
    try:
        run = tfsctl(project, "monitor", "up", NAME, "--port", str(prom), "--window", "4s",
                     "--scrape-interval", "0.5", "--eval-interval", "0.5")
        assert run.returncode == 0, run.stderr + run.stdout
        info = json.loads((project / ".tfso" / "monitor" / NAME / "monitor.json").read_text())
        assert info["container"] and info["pid"] is None
        box = docker_api.inspect(info["container"])
        assert box.running and box.labels[MONITOR_LABEL] == NAME
        assert box.image.startswith(IMAGE_REPO) or info["image"].startswith(IMAGE_REPO)
        raw = docker_api._client.inspect_container(info["container"])  # host network, our user
        assert raw["HostConfig"]["NetworkMode"] == "host"
        assert raw["HostConfig"]["CapDrop"] == ["ALL"]
        state = json.loads((project / ".tfso" / "deployments" / f"{NAME}.json").read_text())
        ports = [r["rest_port"] for r in state["replicas"]]
        assert len(ports) == 2 and state["router"]["metrics_port"]
        for i in range(10):  # through the router: HAProxy spreads them over the 2 containers
            r = requests.post(f"http://127.0.0.1:{rest}/v1/models/{NAME}:predict",
                              json={"instances": [[float(i)]]}, timeout=30)
            assert r.status_code == 200, r.text

        def scalar(expr: str) -> float | None:
            body = requests.get(f"{url}/api/v1/query", timeout=10, params={"query": expr}).json()
            result = body["data"]["result"]
            return float(result[0]["value"][1]) if result else None

        wait_for(lambda: scalar(f'sum(tfso_requests_total{{model="{NAME}"}})') == 10, 60,
                 "Prometheus counting 10 requests over 2 containers")
        wait_for(lambda: scalar('sum(haproxy_backend_http_requests_total{proxy="rest_pool"})')
                 == 10, 60, "the router's exporter counting the same 10 requests")
        run = tfsctl(project, "monitor", "status", NAME, "-o", "json")
        targets = json.loads(run.stdout)["targets"]
        assert sorted((t["job"], t["health"]) for t in targets) == [
            ("replicas", "up"), ("replicas", "up"), ("router", "up")]
        # A redeploy keeps the exporter's port (the router's config is unchanged).
        run = tfsctl(project, "deploy", NAME, "--runtime", "docker")
        assert run.returncode == 0, run.stderr
        again = json.loads((project / ".tfso" / "deployments" / f"{NAME}.json").read_text())
        assert again["router"]["metrics_port"] == state["router"]["metrics_port"]
    finally:
        down = tfsctl(project, "monitor", "down", NAME, timeout=60)
        tfsctl(project, "stop", NAME, timeout=120)
    assert down.returncode == 0, down.stderr
    assert docker_api.list({MONITOR_LABEL: NAME}) == []
