"""Canary analysis from the spec's Prometheus URL on the emulated cluster (README: Kubernetes).

A REAL Prometheus (Debian's) scrapes the emulated pods, which are REAL `tfs-model-server`
processes. No cluster runs here, so Prometheus cannot discover pods through the API server
(kubernetes_sd needs a watch, and Debian's build has no kubernetes_sd): the test writes the
file_sd targets the ServiceMonitor's relabelings would produce (job `replicas`, labels
deployment/role/replica from the pod's labels and name; tests/integration/monitor/
test_kube_scrape.py checks those relabelings), refreshed as pods come and go. The rollout
target's factory must pick the Prometheus source, and its counts must equal what each pod's own
counters say through the pod proxy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers.requires import require_module

require_module("kubernetes")

from orchestrator.rollout.prometheus import PrometheusCounters  # noqa: E402
from orchestrator.rollout.target import PodProxyCounters, routed_target, window  # noqa: E402
from orchestrator.runtime.kubernetes import KubernetesRuntime  # noqa: E402
from orchestrator.spec import load_spec  # noqa: E402
from orchestrator.state import StateStore  # noqa: E402
from tests.helpers.kube_cluster import PODS, EmulatedApiServer, NodeAgent  # noqa: E402
from tests.helpers.launcher import terminate  # noqa: E402
from tests.helpers.server import free_port, wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(600)
NS = "models"
METRICS_PATH = "/monitoring/prometheus/metrics"


class Targets:
    """The file_sd list Prometheus reads: every pod of the deployment, labelled as the
    ServiceMonitor's relabelings label it; rewritten while pods come and go."""

    def __init__(self, api: EmulatedApiServer, path: Path) -> None:
        self.api, self.path = api, path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.write()

    def write(self) -> None:
        groups = []
        for pod in self.api.items(PODS, NS, "io.tfso/deployment=kp"):
            name = pod["metadata"]["name"]
            ports = self.api.pod_ports.get((NS, name))
            if ports:
                groups.append({"targets": [f"127.0.0.1:{ports[8501]}"],
                               "labels": {"deployment": "kp", "role": pod["metadata"]["labels"]["io.tfso/role"],
                                          "replica": name}})
        text = json.dumps(groups)
        if not self.path.exists() or self.path.read_text() != text:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.path)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.write()

    def __enter__(self) -> Targets:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is needed: `make system` installs it"
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "replicas", "metrics_path": METRICS_PATH,
                            "file_sd_configs": [{"files": [str(folder / "targets.json")],
                                                 "refresh_interval": "1s"}]}]}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(folder / "prometheus.log", "wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={folder / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError((folder / "prometheus.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_until(ready, timeout_s=60, what="Prometheus to be ready")
        yield url
    finally:
        terminate(proc)


def predict(api: EmulatedApiServer, pod: str, body: object) -> int:
    url = f"{api.url}/api/v1/namespaces/{NS}/pods/{pod}:8501/proxy/v1/models/kp:predict"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_canary_analysis_reads_the_spec_prometheus_url(
        tmp_path: Path, prometheus: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers.models import half_plus_two_tf1

    store = tmp_path / "claim"
    half_plus_two_tf1(store / "kp" / "1")
    half_plus_two_tf1(store / "kp" / "2", b=3.0)
    with EmulatedApiServer(namespaces=("default", NS)) as api, \
            NodeAgent(api, claims={"model-store": store}) as node, \
            Targets(api, tmp_path / "prom" / "targets.json"):
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulated",
            "clusters": [{"name": "emulated", "cluster": {"server": api.url}}],
            "users": [{"name": "tester", "user": {}}],
            "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "tester"}}]}))
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setenv("TFSO_STATE_DIR", str(tmp_path / "state"))
        (tmp_path / "serving_configs").mkdir()
        (tmp_path / "serving_configs" / "kp.yaml").write_text(
            f"model_uri: pvc://model-store/kp\nbase_path: {store / 'kp'}\nversion_policy: {{specific: [1]}}\n"
            f"kubernetes: {{namespace: {NS}}}\nhealth: {{deadline_s: 240}}\nrouter: true\n"
            f"monitoring: {{prometheus_url: '{prometheus}'}}\n")
        runtime = KubernetesRuntime(StateStore(), poll_s=0.2)
        runtime.deploy([load_spec("kp", check_files=False)])

        def scraped(role: str) -> bool:
            with urllib.request.urlopen(f'{prometheus}/api/v1/query?query=up%7Brole%3D%22{role}%22%7D',
                                        timeout=5) as resp:
                result = json.loads(resp.read())["data"]["result"]
            return bool(result) and all(r["value"][1] == "1" for r in result)

        wait_until(lambda: scraped("stable"), timeout_s=60, what="Prometheus to scrape the stable pod")
        target = routed_target("kp")
        assert isinstance(target.metrics, PrometheusCounters)  # the factory chose the spec's URL
        target.start_canary(2)
        wait_until(lambda: scraped("canary"), timeout_s=60, what="Prometheus to scrape the canary pod")
        direct = PodProxyCounters(target.runtime, "kp")  # each pod's own counters, for comparison
        before, before_direct = target.sample(), direct.sample([])

        pods = {p["metadata"]["labels"]["io.tfso/role"]: p["metadata"]["name"]
                for p in api.items(PODS, NS, "io.tfso/deployment=kp")}
        assert [predict(api, pods["stable"], {"instances": [[1.0]]}) for _ in range(7)] == [200] * 7
        assert [predict(api, pods["canary"], {"instances": [[1.0]]}) for _ in range(3)] == [200] * 3
        assert [predict(api, pods["canary"], {"instances": [["not a number"]]}) for _ in range(2)] == [400] * 2

        def measured() -> dict[str, tuple[int, int]] | None:
            got = {role: (w.requests, w.errors) for role, w in
                   ((r, window(target.sample()[r], before[r])) for r in ("stable", "canary"))}
            return got if got == {"stable": (7, 0), "canary": (5, 2)} else None

        node.wait(measured, timeout_s=60, what="Prometheus to have scraped the requests")
        after_direct = direct.sample([])
        assert {r: (window(after_direct[r], before_direct[r]).requests,
                    window(after_direct[r], before_direct[r]).errors) for r in ("stable", "canary")} \
            == {"stable": (7, 0), "canary": (5, 2)}
        assert window(target.sample()["stable"], before["stable"]).p99_ms is not None
        target.remove_canary()
        runtime.stop("kp")
