"""What the rollout tests on the emulated cluster share (test_kube_rollout_*.py, one module per
test so they run in parallel; README: Kubernetes, rollouts).

The CLI runs in subprocesses against the emulated API server (the unmodified official client);
the pods are REAL `tfs-model-server` processes, and canary analysis reads each pod's own TF
Serving counters through the API server's pod proxy, as on a cluster.

No Service or Gateway data plane can exist here, so the test plays it, and only it: requests go
through the pod proxy to a pod chosen the way the real data plane chooses. Behind the one Service
(replica ratio) that is any Ready pod of the deployment, either role, uniformly; behind a Gateway
it is the HTTPRoute's backendRefs weights as they stand in the API server at that moment (what
any Gateway implementation honours). So the test proves that the rollout sets those weights and
pod counts, that the measured counters decide, and that stable never fails; it does not prove
that a particular Gateway implementation splits traffic exactly by weight.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.spec import load_spec
from tests.helpers.kube_cluster import DEPLOYMENTS, PODS, EmulatedApiServer, NodeAgent

NS = "models"
ROUTES = "/apis/gateway.networking.k8s.io/v1/httproutes"
ANSWERS = {2.5: 1, 3.5: 2}  # y = 0.5 * 1.0 + b: b = 2 in v1, 3 in v2; v3 raises on every input


def build_store(store: Path) -> Path:
    """The claim's folder: v1, v2 (b = 3) and v3, whose graph fails every input."""
    from tests.helpers.models import half_plus_two_tf1

    half_plus_two_tf1(store / "krl" / "1")
    half_plus_two_tf1(store / "krl" / "2", b=3.0)
    half_plus_two_tf1(store / "krl" / "3", fail=True)
    return store


@contextmanager
def emulated_cluster(model_store: Path) -> Iterator[tuple[EmulatedApiServer, NodeAgent]]:
    with EmulatedApiServer(namespaces=("default", NS)) as api, \
            NodeAgent(api, claims={"model-store": model_store}) as node:
        yield api, node


@dataclass
class Traffic:
    """Predict requests through the pod proxy, to pods picked as the data plane would (see top)."""

    api: EmulatedApiServer
    gateway: bool
    records: list[tuple[str, str, int | None, str]] = field(default_factory=list)  # (pod, role, version, error)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _ready_pods(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"stable": [], "canary": []}
        for pod in self.api.items(PODS, NS, "io.tfso/deployment=krl"):
            conditions = (pod.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and \
                    not pod["metadata"].get("deletionTimestamp"):
                out[pod["metadata"]["labels"]["io.tfso/role"]].append(pod["metadata"]["name"])
        return out

    def _pick(self, rng: random.Random) -> tuple[str, str] | None:
        pods = self._ready_pods()
        if not self.gateway:  # the one Service: any Ready pod, either role
            every = [(p, role) for role, names in pods.items() for p in names]
            return rng.choice(every) if every else None
        route = self.api.get(ROUTES, NS, "krl") or {}
        refs = (route.get("spec") or {}).get("rules", [{}])[0].get("backendRefs", [])
        weights = {("canary" if r["name"].endswith("-canary") else "stable"): int(r.get("weight", 1)) for r in refs}
        roles = [r for r in weights if weights[r] > 0 and pods[r]]
        if not roles:
            return None
        role = rng.choices(roles, [weights[r] for r in roles])[0]
        return rng.choice(pods[role]), role

    def _run(self) -> None:
        rng = random.Random(7)
        while not self._stop.is_set():
            picked = self._pick(rng)
            if picked is None:
                self.records.append(("", "", None, "no Ready pod to route to"))
                time.sleep(0.05)
                continue
            pod, role = picked
            url = f"{self.api.url}/api/v1/namespaces/{NS}/pods/{pod}:8501/proxy/v1/models/krl:predict"
            request = urllib.request.Request(url, data=json.dumps({"instances": [[1.0]]}).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    answer = float(json.loads(resp.read())["predictions"][0][0])
                    self.records.append((pod, role, ANSWERS.get(answer), ""))
            except urllib.error.HTTPError as exc:
                self.records.append((pod, role, None, f"{exc.code} {exc.read()[:200]!r}"))
            except OSError as exc:
                self.records.append((pod, role, None, f"{type(exc).__name__}: {exc}"))

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def served(self, role: str) -> list[tuple[str, str, int | None, str]]:
        return [r for r in self.records if r[1] == role]

    def model_errors(self, role: str) -> list[tuple[str, str, int | None, str]]:
        """Failures a server answered (not a pod deleted between the pick and the request: on a
        cluster the endpoints controller removes it first, which the emulator does not model)."""
        return [r for r in self.served(role) if r[3] and "NotFound" not in r[3] and "ServiceUnavailable" not in r[3]]


class Cli:
    def __init__(self, tmp: Path, api: EmulatedApiServer, router: str) -> None:
        self.tmp, self.api = tmp, api
        kubeconfig = tmp / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulated",
            "clusters": [{"name": "emulated", "cluster": {"server": api.url}}],
            "users": [{"name": "tester", "user": {"token": "not-checked"}}],
            "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "tester"}}]}))
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "TFSO_STATE_DIR": str(tmp / "state"),
                    "COLUMNS": "200"}
        (tmp / "serving_configs").mkdir()
        self.spec_file = tmp / "serving_configs" / "krl.yaml"

    def write_spec(self, store: Path, router: str) -> None:
        self.spec_file.write_text(
            f"model_uri: pvc://model-store/krl\nbase_path: {store / 'krl'}\nversion_policy: {{specific: [1]}}\n"
            f"kubernetes: {{namespace: {NS}}}\nhealth: {{deadline_s: 240}}\nrouter: {router}\n")

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                              timeout=timeout, check=False, env=self.env, cwd=self.tmp)

    def rollout(self, version: int, steps: str) -> subprocess.CompletedProcess[str]:
        return self("rollout", "start", "krl", "--version", str(version), "--steps", steps, "--interval", "3s",
                    "--min-requests", "5", "--threshold", "1", "--max-error-rate", "0.05")

    def status(self) -> dict[str, object]:
        shown = self("rollout", "status", "krl", "-o", "json")
        assert shown.returncode == 0, shown.stderr
        return dict(json.loads(shown.stdout))

    def states(self) -> dict[str, dict[int, str]]:
        out = {}
        for pod in self.api.items(PODS, NS, "io.tfso/deployment=krl,io.tfso/role=stable"):
            name = pod["metadata"]["name"]
            url = f"{self.api.url}/api/v1/namespaces/{NS}/pods/{name}:8501/proxy/v1/models/krl"
            with urllib.request.urlopen(url, timeout=10) as resp:
                out[name] = {int(v["version"]): v["state"] for v in json.loads(resp.read())["model_version_status"]}
        return out


def serves_only(states: dict[int, str], version: int) -> bool:
    """`version` AVAILABLE and every other one unloaded (END: a hot-reloaded pod still lists it)."""
    return states.get(version) == "AVAILABLE" and all(st == "END" for v, st in states.items() if v != version)


def promote_then_roll_back(cli: Cli, node: NodeAgent, traffic: Traffic, steps: str) -> None:
    good = cli.rollout(2, steps)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    status = cli.status()
    assert status["phase"] == "succeeded", status
    # promotion: the stable pods hot-reloaded v2 through the ConfigMap, the spec pins it, no canary left
    assert load_spec(str(cli.spec_file), check_files=False).version_policy.versions == (2,)
    node.wait(lambda: cli.states() and all(serves_only(s, 2) for s in cli.states().values()),
              timeout_s=120, what="stable pods to serve v2 alone")
    assert cli.api.get(DEPLOYMENTS, NS, "krl-canary") is None
    measured = [h for h in status["history"] if h.get("requests")]  # type: ignore[union-attr]
    assert measured, status  # the analysis read the pods' counters through the pod proxy
    node.wait(lambda: sum(1 for r in traffic.served("stable") if r[2] == 2) >= 5, timeout_s=120,
              what="stable to answer as v2 after promotion")

    bad = cli.rollout(3, steps)
    assert bad.returncode == 1, bad.stdout[-3000:] + bad.stderr[-3000:]
    status = cli.status()
    assert status["phase"] == "failed", status
    assert cli.api.get(DEPLOYMENTS, NS, "krl-canary") is None
    assert all(serves_only(s, 2) for s in cli.states().values()), cli.states()
    # the failing version's own errors reached the canary only; stable served throughout
    assert traffic.model_errors("canary"), "the canary v3 was never measured failing"
    assert not traffic.model_errors("stable"), traffic.model_errors("stable")[:5]
    assert all(r[2] in (1, 2) for r in traffic.served("stable") if not r[3])
