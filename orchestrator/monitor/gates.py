"""Rollout gates on outputs: canary vs stable answers from the payload logs (`--max-drift`).

Every replica of a deployment logs to the same prefix and each record names the version that
answered, so one read of the window gives both sides: stable's rows (from_version) and the
canary's (to_version), the same window, the same traffic mix. The comparison is `drift.compare`
with stable as the reference, over output features only (the inputs are the same traffic).
"""

from __future__ import annotations

import time
from typing import Any

from orchestrator.errors import RolloutError
from orchestrator.rollout.analysis import Outputs


def require_logging(spec: Any, flag: str) -> None:
    """A gate on outputs needs the logs they are read from: refuse before anything starts."""
    if spec.logging is None:
        raise RolloutError(
            f"{flag} compares the canary's answers with stable's from the payload logs, but "
            f"{spec.name} logs no predictions",
            fix=f"add `logging: {{sample: 0.05, path: ../logs}}` to {spec.source or 'its spec'}, "
                f"`tfsctl deploy {spec.name}`, then start the rollout again (or drop {flag})")


class LoggedOutputs:
    """`OutputSource` over the payload logs under `prefix` (the spec's logging.path/NAME).

    The canary's rows are the window's. Stable's are the same window's when it has `min_rows` of
    them; at the last step (canary weight 100) stable answers nobody, so its reference is then
    its answers since the rollout started (`started_at`): the same version on the same traffic.
    """

    def __init__(self, prefix: str, from_version: int, to_version: int, *, started_at: float = 0.0,
                 min_rows: int = 1, clock: Any = time.time) -> None:
        self.prefix = prefix
        self.from_version = from_version
        self.to_version = to_version
        self.started_at = started_at
        self.min_rows = min_rows
        self.clock = clock

    def _outputs(self, since_ts: float, version: int) -> dict[str, Any]:
        from orchestrator.monitor.drift import load_window

        now = self.clock()
        window = load_window(self.prefix, since_s=max(0.0, now - since_ts), now=now, version=version, workers=1)
        cols = window.columns.get(version, {})
        return {k: a for k, a in cols.items() if window.sides.get(k) == "output"}

    def compare(self, since_ts: float) -> Outputs | None:
        from orchestrator.monitor.drift import compare

        canary = self._outputs(since_ts, self.to_version)
        stable = self._outputs(since_ts, self.from_version)
        if _rows(stable) < self.min_rows and self.started_at and self.started_at < since_ts:
            stable = self._outputs(self.started_at, self.from_version)
        canary_rows, stable_rows = _rows(canary), _rows(stable)
        if not canary_rows or not stable_rows:
            return Outputs(canary_rows, stable_rows)
        missing = sorted(k for k in stable if k not in canary)
        if missing:  # the canary does not even answer with stable's outputs
            return Outputs(canary_rows, stable_rows, psi=float("inf"), feature=f"canary lacks {missing[0]}")
        worst = max(compare(stable, canary), key=lambda d: d.psi, default=None)
        return Outputs(canary_rows, stable_rows, psi=None if worst is None else worst.psi,
                       feature="" if worst is None else worst.feature)


def _rows(cols: dict[str, Any]) -> int:
    return max((len(a) for a in cols.values()), default=0)


class BothOutputs:
    """Shadow mode with --max-drift too: drift from the logs, agreement from the mirror."""

    def __init__(self, logged: LoggedOutputs, mirrored: Any) -> None:
        self.logged = logged
        self.mirrored = mirrored

    def compare(self, since_ts: float) -> Outputs | None:
        import dataclasses

        drift, agreement = self.logged.compare(since_ts), self.mirrored.compare(since_ts)
        if drift is None or agreement is None:
            return None
        return dataclasses.replace(agreement, canary_rows=min(drift.canary_rows, agreement.canary_rows),
                                   stable_rows=min(drift.stable_rows, agreement.stable_rows),
                                   psi=drift.psi, feature=drift.feature)
