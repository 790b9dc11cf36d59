"""A third runtime gets routed rollouts from the interfaces alone: an in-memory runtime and
router (standing in for a cluster, which cannot exist here) driven by the real manager and
`RoutedTarget`, with no code of their own in orchestrator.rollout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from orchestrator.plan import ReloadStep
from orchestrator.rollout.machine import Phase, Thresholds
from orchestrator.rollout.manager import RolloutManager, RolloutStore, new_status
from orchestrator.rollout.metrics import Snapshot
from orchestrator.rollout.target import RoutedTarget
from orchestrator.router.base import Backend, Router
from orchestrator.runtime.base import CANARY, STABLE, Deployment, Replica, ReplicaStatus, Runtime
from orchestrator.spec import Spec, load_spec
from orchestrator.state import StateStore


class MemoryRouter:
    def __init__(self) -> None:
        self.weights = {"stable": 100, "canary": 0}
        self.canary: list[Backend] = []
        self.stable_version: int | None = None

    def set_weights(self, weights: Mapping[str, int]) -> None:
        self.weights = dict(weights)

    def get_weights(self) -> dict[str, int]:
        return dict(self.weights)

    def endpoint(self) -> tuple[str, int, int]:
        return ("127.0.0.1", 9501, 9500)

    def route_canary(self, replicas: Sequence[Backend], version: int | None = None) -> None:
        self.canary = list(replicas)

    def set_stable_version(self, version: int) -> None:
        self.stable_version = version

    def drain_canary(self) -> None:
        self.weights, self.canary = {"stable": 100, "canary": 0}, []

    def close(self) -> None:
        pass


class MemoryRuntime(Runtime):
    name = "memory"

    def __init__(self, store: StateStore, router: MemoryRouter) -> None:
        self.store, self._router = store, router
        self.canaries: list[Replica] = []
        self.applied: list[ReloadStep] = []
        self.reloaded: list[Spec] = []

    def deploy(self, specs: Sequence[Spec], *, on_poll: Any = None) -> Deployment:
        self.reloaded = list(specs)
        return Deployment(specs[0].name, self.name, "reloaded", "", "")

    def status(self, name: str) -> list[ReplicaStatus]:
        return []

    def logs(self, name: str, *, tail: int = 100) -> dict[int, str]:
        return {}

    def stop(self, name: str) -> list[str]:
        return []

    def replicas(self, name: str) -> list[Replica]:
        return [Replica("m-0", STABLE, None, "127.0.0.1", 8501, 8500), *self.canaries]

    def start_canary(self, name: str, version: int, *, count: int = 1) -> list[Replica]:
        self.canaries = [Replica(f"m-canary{i}", CANARY, version, "127.0.0.1", 8601 + i, 8600 + i)
                         for i in range(count)]
        return list(self.canaries)

    def remove_canary(self, name: str) -> None:
        self.canaries = []

    def canary_alive(self, name: str) -> bool:
        return bool(self.canaries)

    def router(self, name: str) -> Router:
        return self._router

    def apply_label_steps(self, name: str, steps: Sequence[ReloadStep], **kwargs: Any) -> None:
        self.applied += steps


class Counters:
    """Both roles answer: 100 requests per sample, none failing."""

    def __init__(self) -> None:
        self.n = 0

    def sample(self, replicas: Sequence[Replica]) -> dict[str, Snapshot]:
        self.n += 100
        buckets = {1000.0: float(self.n), float("inf"): float(self.n)}
        return {"stable": Snapshot(self.n, 0, buckets), "canary": Snapshot(self.n, 0, buckets)}


def test_a_runtime_that_implements_the_verbs_rolls_out(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "m" / "1").mkdir(parents=True)
    (tmp_path / "models" / "m" / "2").mkdir(parents=True)
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "serving_configs" / "m.yaml").write_text(
        "base_path: ../models/m\nversion_policy: {specific: [1]}\nversion_labels: {stable: 1}\nrouter: true\n")
    store = StateStore(tmp_path / ".tfso")
    store.save("m", {"name": "m", "runtime": "memory", "router": {"rest_port": 9501}, "specs": []})
    router = MemoryRouter()
    runtime = MemoryRuntime(store, router)
    target = RoutedTarget(load_spec("m"), runtime, metrics=Counters(), canary_replicas=2)

    clock = [1000.0]
    seen_weights: list[int] = []
    manager = RolloutManager(target, RolloutStore(store), clock=lambda: clock[0],
                             sleep=lambda s: clock.__setitem__(0, clock[0] + max(s, 0.01)),
                             on_step=lambda s: seen_weights.append(router.weights["canary"]))
    status = new_status("m", "m", 1, 2, steps=(10, 50, 100), interval_s=5.0,
                        thresholds=Thresholds(min_requests=10), now=1000.0)
    final = manager.run(status)

    assert final.phase is Phase.SUCCEEDED, final.message
    assert {10, 50, 100} <= set(seen_weights)
    # Promotion: one label move planned for this runtime and applied by it, then the pinned spec.
    assert [s.description.split()[0] for s in runtime.applied] == ["load", "point"]
    moved = text_format.Parse(runtime.applied[-1].models_config, model_server_config_pb2.ModelServerConfig())
    assert dict(moved.model_config_list.config[0].version_labels) == {"stable": 2}
    assert router.stable_version == 2
    assert [s.version_policy.versions for s in runtime.reloaded] == [(2,)]
    assert "specific: [2]" in (tmp_path / "serving_configs" / "m.yaml").read_text()
    assert runtime.canaries == [] and router.get_weights() == {"stable": 100, "canary": 0}
