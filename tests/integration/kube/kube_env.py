"""What the kubernetes runtime tests on the emulated cluster share (test_kube_runtime*.py, split
into modules so they run in parallel; README: Kubernetes, tier 2).

The runtime reaches the emulated API server through a kubeconfig file and the unmodified
official client; the node agent's pods are REAL `tfs-model-server` processes reading the
model from a "claim" folder, so AVAILABLE, hot reloads and crashes are a real server's. Only
scheduling, image pulls and networking are simulated (a cluster cannot run on these machines).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.runtime.kubernetes import KubernetesRuntime
from orchestrator.spec import Spec, parse_spec
from orchestrator.state import StateStore
from tests.helpers.kube_cluster import EmulatedApiServer, NodeAgent
from tests.helpers.server import export_half_plus_two_tf1, write_corrupt_version

NS = "models"


def build_store(store: Path) -> Path:
    """The claim's folder: khp v1, v2 (b = 3) and a corrupt v3 (every spec names its versions,
    so 3 loads only when asked)."""
    export_half_plus_two_tf1(store / "khp", versions=(1,))
    export_half_plus_two_tf1(store / "khp", versions=(2,), b=3.0)
    write_corrupt_version(store / "khp", 3)
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


@contextmanager
def emulated_env(tmp_path: Path, model_store: Path) -> Iterator[Env]:
    with EmulatedApiServer(namespaces=("default", NS)) as api, \
            NodeAgent(api, claims={"model-store": model_store}, crash_images={"tensorflow/serving:crash"}) as node:
        yield Env(tmp_path, api, node, model_store)
