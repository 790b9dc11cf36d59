"""Canary analysis: is this interval's canary traffic healthy? Pure; metrics come in as numbers.

Too few requests is "no data", which holds the step rather than failing it (as Flagger does):
a quiet hour must not roll back a good version, nor promote an untested one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no_data"
    CRASHED = "crashed"


@dataclass(frozen=True)
class Window:
    """Counters over one interval for one group (stable or canary).

    `requests` and `errors` come from one source (`source` names it) over the same interval, so
    the rate is a true fraction; it is clamped to [0, 1] all the same.
    """

    requests: int
    errors: int
    p99_ms: float | None = None
    source: str = ""

    @property
    def error_rate(self) -> float | None:
        if not self.requests:
            return None
        return min(1.0, max(0.0, self.errors / self.requests))


@dataclass(frozen=True)
class Outputs:
    """Canary and stable answers over the same window, from the payload logs (or shadow replies).

    `psi` is the worst output feature's PSI of canary against stable (None: not compared);
    `agreement` the fraction of mirrored requests the canary answered like stable (shadow mode:
    same top-1 class, or |diff| within tolerance for a regressor), `max_abs_diff` the largest
    difference seen. Too few rows on either side is no data, like too few requests.
    """

    canary_rows: int
    stable_rows: int
    psi: float | None = None
    feature: str = ""
    agreement: float | None = None
    max_abs_diff: float | None = None


@dataclass(frozen=True)
class Analysis:
    verdict: Verdict
    reason: str
    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    p99_ms: float | None = None
    source: str = ""
    drift_psi: float | None = None
    agreement: float | None = None


def analyse(canary: Window, stable: Window | None, *, max_error_rate: float,
            max_latency_p99_ms: float | None, min_requests: int, canary_alive: bool = True,
            outputs: Outputs | None = None, max_drift: float | None = None,
            min_agreement: float | None = None, min_rows: int = 0) -> Analysis:
    def result(verdict: Verdict, reason: str) -> Analysis:
        if canary.source and verdict is not Verdict.CRASHED:
            reason += f" [counters: {canary.source}]"
        return Analysis(verdict, reason, canary.requests, canary.errors, canary.error_rate, canary.p99_ms,
                        canary.source, outputs.psi if outputs else None, outputs.agreement if outputs else None)

    if not canary_alive:
        return result(Verdict.CRASHED, "canary replica is not running")
    if canary.requests < max(min_requests, 1):
        return result(Verdict.NO_DATA, f"{canary.requests} canary requests (< {min_requests})")
    rate = canary.error_rate or 0.0
    problems = []
    stable_rate = stable.error_rate if stable is not None and stable.requests >= max(min_requests, 1) else None
    # Errors that stable shows too (bad client requests) are not the canary's fault.
    if rate > max_error_rate and (stable_rate is None or rate > stable_rate + max_error_rate):
        line = f"error rate {rate:.2%} > {max_error_rate:.2%}"
        if stable is not None and stable.error_rate is not None:
            line += f" (stable {stable.error_rate:.2%})"
        problems.append(line)
    if max_latency_p99_ms is not None and canary.p99_ms is not None and canary.p99_ms > max_latency_p99_ms:
        line = f"p99 {canary.p99_ms:.1f} ms > {max_latency_p99_ms:g} ms"
        if stable is not None and stable.p99_ms is not None:
            line += f" (stable {stable.p99_ms:.1f} ms)"
        problems.append(line)
    gated = max_drift is not None or min_agreement is not None
    if gated and outputs is None:
        return result(Verdict.NO_DATA, "no logged outputs to compare")
    if outputs is not None and gated:
        if min(outputs.canary_rows, outputs.stable_rows) < max(min_rows, 1):
            if problems:
                return result(Verdict.FAIL, "; ".join(problems))
            return result(Verdict.NO_DATA, f"{outputs.canary_rows} canary / {outputs.stable_rows} stable "
                                           f"logged answers (< {min_rows})")
        if max_drift is not None and outputs.psi is not None and outputs.psi > max_drift:
            problems.append(f"output drift PSI {outputs.psi:.3f} > {max_drift:g}"
                            + (f" ({outputs.feature})" if outputs.feature else ""))
        if min_agreement is not None and outputs.agreement is not None and outputs.agreement < min_agreement:
            diff = f", max abs diff {outputs.max_abs_diff:.3g}" if outputs.max_abs_diff is not None else ""
            problems.append(f"agreement {outputs.agreement:.2%} < {min_agreement:.2%}{diff}")
    if problems:
        return result(Verdict.FAIL, "; ".join(problems))
    p99 = f", p99 {canary.p99_ms:.1f} ms" if canary.p99_ms is not None else ""
    extra = ""
    if outputs is not None and outputs.psi is not None:
        extra += f", output PSI {outputs.psi:.3f} over {outputs.canary_rows}/{outputs.stable_rows} rows"
    if outputs is not None and outputs.agreement is not None:
        extra += f", agreement {outputs.agreement:.2%} over {outputs.canary_rows} mirrored"
        if outputs.max_abs_diff is not None:
            extra += f" (max abs diff {outputs.max_abs_diff:.3g})"
        if stable is not None and stable.p99_ms is not None:
            extra += f", stable p99 {stable.p99_ms:.1f} ms"
    return result(Verdict.PASS, f"{canary.requests} requests, error rate {rate:.2%}{p99}{extra}")
