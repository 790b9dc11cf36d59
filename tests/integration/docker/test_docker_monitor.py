"""`tfsctl monitor up` over a Docker deployment: a host Prometheus scrapes the containers' ports.

The replicas are stand-in containers publishing on 127.0.0.1; PromQL must count exactly the
requests the test sent to them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from orchestrator.runtime.base import free_port
from tests.integration.docker.conftest import tfsctl, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.docker]
NAME = "t_monitor"


def test_prometheus_scrapes_docker_replicas(project: Path) -> None:
    grpc, rest, prom = free_port(), free_port(), free_port()
    write_spec(project, NAME, "base_path: ../models/hpt\nversion_policy: {specific: [1]}\n"
                              f"replicas: 2\nports: {{grpc: {grpc}, rest: {rest}}}\n")
    run = tfsctl(project, "deploy", NAME, "--runtime", "docker")
    assert run.returncode == 0, run.stderr
    url = f"http://127.0.0.1:{prom}"
    try:
        run = tfsctl(project, "monitor", "up", NAME, "--port", str(prom), "--window", "4s",
                     "--scrape-interval", "0.5", "--eval-interval", "0.5")
        assert run.returncode == 0, run.stderr + run.stdout
        state = json.loads((project / ".tfso" / "deployments" / f"{NAME}.json").read_text())
        ports = [r["rest_port"] for r in state["replicas"]]
        assert len(ports) == 2
        for i, port in enumerate(ports * 5):  # 5 requests to each container
            r = requests.post(f"http://127.0.0.1:{port}/v1/models/{NAME}:predict",
                              json={"instances": [[float(i)]]}, timeout=30)
            assert r.status_code == 200, r.text

        def count() -> float | None:
            body = requests.get(f"{url}/api/v1/query", timeout=10, params={
                "query": f'sum by (version) (tfso_requests_total{{model="{NAME}"}})'}).json()
            result = body["data"]["result"]
            return float(result[0]["value"][1]) if result else None

        from tests.helpers.rollout import wait_for

        wait_for(lambda: count() == 10, 60, "Prometheus counting 10 requests over 2 containers")
        run = tfsctl(project, "monitor", "status", NAME, "-o", "json")
        targets = json.loads(run.stdout)["targets"]
        assert sorted(t["health"] for t in targets) == ["up", "up"]
    finally:
        tfsctl(project, "monitor", "down", NAME, timeout=60)
        tfsctl(project, "stop", NAME, timeout=120)
