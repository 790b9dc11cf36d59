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
class Analysis:
    verdict: Verdict
    reason: str
    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    p99_ms: float | None = None
    source: str = ""


def analyse(canary: Window, stable: Window | None, *, max_error_rate: float,
            max_latency_p99_ms: float | None, min_requests: int, canary_alive: bool = True) -> Analysis:
    def result(verdict: Verdict, reason: str) -> Analysis:
        if canary.source and verdict is not Verdict.CRASHED:
            reason += f" [counters: {canary.source}]"
        return Analysis(verdict, reason, canary.requests, canary.errors, canary.error_rate, canary.p99_ms,
                        canary.source)

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
    if problems:
        return result(Verdict.FAIL, "; ".join(problems))
    p99 = f", p99 {canary.p99_ms:.1f} ms" if canary.p99_ms is not None else ""
    return result(Verdict.PASS, f"{canary.requests} requests, error rate {rate:.2%}{p99}")
