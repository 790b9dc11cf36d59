"""What a rollout drives: the stable deployment, its canary replicas and the router's weights.

`RolloutTarget` is the narrow interface the manager sees. `RoutedTarget` realises it from three
parts, as Flagger keeps workload, router and metric provider apart: a runtime (canary replicas
and label moves, `runtime.base.Runtime`), a router (weights, `router.base.Router`) and a metrics
source. Any runtime that implements the runtime verbs gets routed rollouts with no code here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.errors import RolloutError, RuntimeFailure
from orchestrator.rollout.analysis import Window
from orchestrator.rollout.metrics import (
    TF_SERVING_SOURCE,
    Snapshot,
    scrape,
    snapshot_from_text,
    total,
)
from orchestrator.spec import Spec, load_spec, pin_spec_file

if TYPE_CHECKING:
    from orchestrator.router.base import Router
    from orchestrator.runtime.base import Replica, Runtime


class RolloutTarget(ABC):
    @abstractmethod
    def start_canary(self, version: int) -> None: ...

    @abstractmethod
    def canary_alive(self) -> bool: ...

    @abstractmethod
    def set_weight(self, percent: int) -> None: ...

    @abstractmethod
    def sample(self) -> dict[str, Snapshot]:
        """Cumulative counters for `stable` and `canary` right now."""

    @abstractmethod
    def promote(self, version: int) -> None:
        """Stable replicas hot-reload `version` (label-safe), and the spec says so."""

    @abstractmethod
    def remove_canary(self) -> None: ...


def window(after: Snapshot, before: Snapshot) -> Window:
    diff = after - before
    return Window(int(diff.requests), int(diff.errors), diff.quantile_ms(0.99), after.source)


ROUTER_SOURCE = "router (HAProxy) counters"


def pick_counters(prom: list[Snapshot | None], router: Snapshot) -> Snapshot:
    """Requests and errors from ONE source: TF Serving's when every replica answered its scrape
    (it sees gRPC errors, which travel as HTTP 200), else the router's. Latency is TF Serving's."""
    answered = [p for p in prom if p is not None]
    merged = total(answered)
    if prom and len(answered) == len(prom):
        return merged
    return Snapshot(router.requests, router.errors, merged.buckets, ROUTER_SOURCE)


class MetricsSource(Protocol):
    def sample(self, replicas: Sequence[Replica]) -> dict[str, Snapshot]:
        """Cumulative counters for `stable` and `canary` over these replicas, right now."""


class RouterAndServerCounters:
    """Requests and errors from TF Serving's own counters (router's when a replica does not
    answer, see `pick_counters`), latency from TF Serving's histograms."""

    def __init__(self, router: Any, model: str, path: str) -> None:
        self.router = router  # anything with HAProxy's `counters()`
        self.model = model
        self.path = path

    def sample(self, replicas: Sequence[Replica]) -> dict[str, Snapshot]:
        import requests

        router = self.router.counters()
        with requests.Session() as session:
            prom = {role: [scrape(r.rest_url, self.model, self.path, session=session)
                           for r in replicas if r.role == role] for role in ("stable", "canary")}
        return {role: pick_counters(prom[role], _as_snapshot(router[role])) for role in prom}


class PodProxyCounters:
    """TF Serving's own counters from every pod, read through the API server's pod proxy (a
    cluster's pods are not reachable from here): requests, errors and p99 from one source.

    Pods come and go during a replica-ratio split, so the totals add up each pod's increase
    since it was last read: a pod that vanishes takes nothing away, a new one starts at zero.
    """

    def __init__(self, runtime: Any, model: str) -> None:
        self.runtime = runtime  # anything with `pod_metrics(name, role) -> {pod: text}`
        self.model = model
        self._seen: dict[str, Snapshot] = {}
        self._totals = {"stable": Snapshot(source=TF_SERVING_SOURCE), "canary": Snapshot(source=TF_SERVING_SOURCE)}

    def sample(self, replicas: Sequence[Replica]) -> dict[str, Snapshot]:
        for role in self._totals:
            for pod, text in self.runtime.pod_metrics(self.model, role).items():
                now = snapshot_from_text(text, self.model)
                before = self._seen.get(pod, Snapshot())
                restarted = now.requests < before.requests
                self._totals[role] = self._totals[role] + (now if restarted else now - before)
                self._seen[pod] = now
        return dict(self._totals)


def _as_snapshot(counters: Any) -> Snapshot:
    return Snapshot(float(counters.requests), float(counters.errors))


class RoutedTarget(RolloutTarget):
    """Canary replicas from `runtime`, traffic split by `router`, measured by `metrics`.

    Promotion is one label move (`plan.plan_label_moves` applied by the runtime): every stable
    replica loads the new version beside the old, the labels follow it once it is AVAILABLE,
    the router's checks ask for it, and the pinned spec is deployed again (dropping the old
    version). No replica restarts.
    """

    def __init__(self, spec: Spec, runtime: Runtime, *, router: Router | None = None,
                 metrics: MetricsSource | None = None, canary_replicas: int = 1,
                 on_canary_change: Callable[[], None] | None = None) -> None:
        self.spec = spec
        # Called once canary replicas exist and once they are gone (a running `tfsctl monitor`
        # scrapes them in between).
        self.on_canary_change = on_canary_change or (lambda: None)
        self.name = spec.name
        self.runtime = runtime
        self.canary_replicas = canary_replicas
        state = runtime.store.load(self.name)
        if state is None or state.get("runtime") != runtime.name:
            where = "" if runtime.name == "local" else f" --runtime {runtime.name}"
            raise RolloutError(f"no {runtime.name} deployment named {self.name!r}",
                               fix=f"deploy it first: `tfsctl deploy {self.name}{where}` (with `router: true`)")
        if not state.get("router"):
            raise RolloutError(f"{self.name} has no router, so traffic cannot be split",
                               fix=f"add `router: true` to {spec.source or 'the spec'} and `tfsctl deploy {self.name}`")
        self.state = state
        self.router = router or runtime.router(self.name)
        self.metrics = metrics or RouterAndServerCounters(self.router, self.name, spec.monitoring.path)

    def start_canary(self, version: int) -> None:
        replicas = self.runtime.start_canary(self.name, version, count=self.canary_replicas)
        self.on_canary_change()
        self.router.route_canary(replicas, version)

    def canary_alive(self) -> bool:
        return self.runtime.canary_alive(self.name)

    def set_weight(self, percent: int) -> None:
        self.router.set_weights({"stable": 100 - percent, "canary": percent})

    def sample(self) -> dict[str, Snapshot]:
        return self.metrics.sample(self.runtime.replicas(self.name))

    def promote(self, version: int) -> None:
        from orchestrator.plan import plan_label_moves

        if self.spec.source is None:
            raise RolloutError("the spec has no file to pin the promoted version in")
        others = [s for s in (load_spec(p) for p in self.state.get("specs", [])) if s.name != self.name]
        current = list(self.spec.version_policy.select(self.spec.wanted_versions()))
        moves = {k: version for k, v in self.spec.version_labels.items() if v in current}
        steps = plan_label_moves([self.spec, *others], self.name, moves, version, current_versions=current,
                                 model_path=self.runtime.model_path)
        self.runtime.apply_label_steps(self.name, steps, spec=self.spec)
        # The router's checks now ask for the new version, AVAILABLE beside the old one.
        self.router.set_stable_version(version)
        # The spec pins the new version (labels already on it); the reload drops the old one.
        pin_spec_file(Path(self.spec.source), version, {**self.spec.version_labels, **moves})
        promoted = load_spec(str(self.spec.source))
        self.runtime.reload([promoted, *others])
        self.spec = promoted
        self.state = self.runtime.store.load(self.name) or self.state

    def remove_canary(self) -> None:
        try:
            self.router.drain_canary()
        except RuntimeFailure:
            pass  # no router answering: nothing to drain
        self.runtime.remove_canary(self.name)
        self.on_canary_change()


def routed_target(name: str, canary_replicas: int = 1, *,
                  on_canary_change: Callable[[], None] | None = None) -> RoutedTarget:
    """The routed target for deployment `name` on the runtime its state names."""
    from orchestrator.runtime.select import runtime_by_name
    from orchestrator.state import StateStore

    store = StateStore()
    kind = (store.load(name) or {}).get("runtime", "local")
    spec = load_spec(name, check_files=kind != "kubernetes")  # a cluster reads model_uri
    runtime = runtime_by_name(kind, store)
    metrics: MetricsSource | None = None
    if spec.monitoring.prometheus_url:  # the user's Prometheus, on any runtime
        from orchestrator.rollout.manager import RolloutStore
        from orchestrator.rollout.prometheus import PrometheusCounters

        metrics = source = PrometheusCounters(spec.monitoring.prometheus_url, name, name)
        running = RolloutStore(store).load(name)
        if running is None or running.terminal:  # a new rollout: refuse now if it cannot measure;
            source.check()  # abort and resume of a running one must work while Prometheus is down
    elif kind == "kubernetes":  # no HAProxy counters on a cluster: each pod's own, via the pod proxy
        if not spec.monitoring.prometheus:
            raise RolloutError(f"{name} exports no Prometheus metrics, so canary analysis has nothing to read",
                               fix=f"set `monitoring: {{prometheus: true}}` in {spec.source} and "
                               f"`tfsctl deploy {name} --runtime kubernetes`")
        metrics = PodProxyCounters(runtime, name)
    return RoutedTarget(spec, runtime, metrics=metrics, canary_replicas=canary_replicas,
                        on_canary_change=on_canary_change)
