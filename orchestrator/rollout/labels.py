"""Labels mode: TF Serving's native canary on the stable servers themselves.

Every stable replica loads {old, new}; the `canary` label points at the new version (set only
once it is AVAILABLE, the two-step way), and clients split traffic between the `stable` and
`canary` labels with `orchestrator.client.split.LabelSplit`. The rollout publishes the weights
in `.tfso/rollouts/NAME.weights.json` and reads the clients' per-label measurements from
`.tfso/rollouts/NAME.labels/*.json` — TF Serving's own metrics carry no version. This suits
clients on the deployment's machine; across machines, use the router (replicas mode).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import RolloutError
from orchestrator.protocol.labels import parse_stats, weights_document
from orchestrator.rollout.metrics import Snapshot
from orchestrator.rollout.target import RolloutTarget
from orchestrator.spec import Spec, load_spec, pin_spec_file
from orchestrator.state import StateStore, write_atomic

if TYPE_CHECKING:
    from orchestrator.runtime.base import Runtime

LABEL_GRACE_S = 2.0
"""How long clients have to see new weights (LabelSplit re-reads them every 0.5 s by default)
before a label they might still choose is removed."""


class LabelsTarget(RolloutTarget):
    def __init__(self, spec: Spec, store: StateStore | None = None, *, version: int | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.store = store or StateStore()
        state = self.store.load(self.name)
        if state is None:
            raise RolloutError(f"no deployment named {self.name!r}", fix=f"deploy it first: `tfsctl deploy {self.name}`")
        self.state = state
        self.old = [v for v in spec.wanted_versions() if v != version]
        self.version = version  # known when resuming a rollout
        rollouts = self.store.root / "rollouts"
        self.weights_file = rollouts / f"{self.name}.weights.json"
        self.stats_dir = rollouts / f"{self.name}.labels"

    # -- config pushes ------------------------------------------------------------------------

    def _runtime(self) -> Runtime:
        from orchestrator.runtime.select import runtime_of_deployment

        return runtime_of_deployment(self.name, self.store)

    def _specs(self, labels: dict[str, int]) -> list[Spec]:
        """The spec with the labels its servers have now, and the deployment's other models."""
        labelled = self.spec.model_copy(update={"version_labels": labels})
        others = [s for s in (load_spec(p) for p in self.state.get("specs", [])) if s.name != self.name]
        return [labelled, *others]

    def _apply(self, plan: Any, *args: Any, labels: dict[str, int] | None = None, **kwargs: Any) -> None:
        """Plan the reloads with `plan` (from the servers' `labels`, default this mode's `stable`
        ones) for this runtime's model paths; the runtime applies them."""
        runtime = self._runtime()
        steps = plan(self._specs(labels or self._labels()), self.name, *args, model_path=runtime.model_path,
                     **kwargs)
        runtime.apply_label_steps(self.name, steps, spec=self.spec)

    def _labels(self) -> dict[str, int]:
        return dict(self.spec.version_labels) or {"stable": max(self.old)}

    # -- RolloutTarget ------------------------------------------------------------------------

    def start_canary(self, version: int) -> None:
        from orchestrator.plan import plan_label_move

        self.version = version
        self.set_weight(0)
        self._apply(plan_label_move, "canary", version, current_versions=self.old)

    def canary_alive(self) -> bool:
        from orchestrator.health import model_status

        if self.version is None:
            return False
        for replica in self.state["replicas"]:
            health = model_status(f"http://127.0.0.1:{replica['rest_port']}", self.name)
            if self.version not in health.available():
                return False
        return True

    def set_weight(self, percent: int) -> None:
        write_atomic(self.weights_file, weights_document({"stable": 100 - percent, "canary": percent}, time.time()))

    def sample(self) -> dict[str, Snapshot]:
        result = {"stable": Snapshot(), "canary": Snapshot()}
        for path in sorted(self.stats_dir.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for label, requests, errors, buckets in parse_stats(data):
                if label in result:
                    result[label] = result[label] + Snapshot(requests, errors, buckets, "client-side label counters")
        return result

    def promote(self, version: int) -> None:
        from orchestrator.plan import plan_label_moves

        labels = {k: (version if v in self.old else v) for k, v in self._labels().items()}
        # Move the labels while both versions are loaded, then let the pinned spec drop the old one.
        self._apply(plan_label_moves, {**labels, "canary": version}, version, current_versions=self.old,
                    labels={**self._labels(), "canary": version})
        self.set_weight(0)
        time.sleep(LABEL_GRACE_S)  # clients stop choosing `canary` before it disappears
        if self.spec.source is None:
            raise RolloutError("the spec has no file to pin the promoted version in")
        pin_spec_file(Path(self.spec.source), version, labels if self.spec.version_labels else {})
        promoted = load_spec(str(self.spec.source))
        self._runtime().deploy([promoted])
        self.spec = promoted
        self.old = [version]

    def remove_canary(self) -> None:
        self.set_weight(0)
        if self.version is None or self.version in self.old:
            return
        time.sleep(LABEL_GRACE_S)  # clients stop choosing `canary` before it disappears
        # Labels first (the canary label goes), then the version: each step a whole config.
        from orchestrator.plan import plan_label_drop

        self._apply(plan_label_drop, "canary", current_versions=sorted(set(self.old) | {self.version}),
                    keep_versions=sorted(self.old))
        self.version = None
