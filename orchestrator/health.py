"""Readiness as TF Serving defines it: every wanted version of every model is AVAILABLE.

Status comes from the REST model status API, which answers 200 whatever the state, so the
state is parsed, not the HTTP code. Waits have a deadline and say what they waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import requests

AVAILABLE = "AVAILABLE"


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


@dataclass(frozen=True)
class ModelHealth:
    """What one replica says about one model (`reachable` False: no answer at all)."""

    model: str
    reachable: bool
    versions: tuple[VersionState, ...] = ()
    error: str = ""

    def available(self) -> set[int]:
        return {v.version for v in self.versions if v.state == AVAILABLE}


def model_status(rest_url: str, model: str, *, timeout_s: float = 2.0,
                 session: requests.Session | None = None) -> ModelHealth:
    getter = session.get if session is not None else requests.get
    try:
        response = getter(f"{rest_url}/v1/models/{model}", timeout=timeout_s)
    except requests.RequestException as exc:
        return ModelHealth(model, reachable=False, error=f"{type(exc).__name__}: {exc}")
    try:
        body = response.json()
    except ValueError:
        return ModelHealth(model, reachable=True, error=f"HTTP {response.status_code}: {response.text[:200]}")
    if "error" in body:
        return ModelHealth(model, reachable=True, error=str(body["error"]))
    versions = tuple(
        VersionState(
            version=int(item.get("version", 0)),
            state=item.get("state", "UNKNOWN"),
            error_code=item.get("status", {}).get("error_code", "OK"),
            error_message=item.get("status", {}).get("error_message", ""),
        )
        for item in body.get("model_version_status", [])
    )
    return ModelHealth(model, reachable=True, versions=tuple(sorted(versions, key=lambda v: v.version)))


@dataclass
class Readiness:
    """The latest answer while waiting, for progress displays and timeout messages."""

    ready: bool = False
    missing: dict[str, list[int]] = field(default_factory=dict)
    detail: str = "no answer yet"
    failed: bool = False  # a wanted version ended with a load error: waiting longer won't help


def check_ready(rest_url: str, wanted: Mapping[str, Sequence[int]], *,
                session: requests.Session | None = None) -> Readiness:
    missing: dict[str, list[int]] = {}
    details = []
    failed = False
    for model, versions in wanted.items():
        health = model_status(rest_url, model, session=session)
        if not health.reachable:
            return Readiness(False, {m: list(v) for m, v in wanted.items()}, f"no answer from {rest_url} ({health.error})")
        lacking = sorted(set(versions) - health.available())
        failed = failed or any(v.version in lacking and v.state == "END" and v.error_code != "OK"
                               for v in health.versions)
        if lacking or health.error:
            missing[model] = lacking
            states = ", ".join(f"v{v.version} {v.state}" + (f" ({v.error_message})" if v.error_message else "")
                               for v in health.versions) or health.error or "no versions yet"
            details.append(f"{model}: {states}")
    return Readiness(not missing, missing, "; ".join(details) or "all AVAILABLE", failed)


def wait_until_available(
    rest_url: str,
    wanted: Mapping[str, Sequence[int]],
    *,
    deadline_s: float,
    poll_interval_s: float = 0.25,
    on_poll: Callable[[Readiness], None] | None = None,
    should_abort: Callable[[], str | None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Readiness:
    """Poll until every wanted version is AVAILABLE, the deadline passes or `should_abort` says why.

    Returns the last Readiness (check `.ready`); `should_abort` lets a runtime stop the wait
    early when its process or container has exited.
    """
    end = clock() + deadline_s
    last = Readiness()
    with requests.Session() as session:
        while True:
            last = check_ready(rest_url, wanted, session=session)
            if on_poll:
                on_poll(last)
            if last.ready or last.failed:
                return last
            if should_abort and (reason := should_abort()):
                last.detail = reason
                return last
            if clock() >= end:
                return last
            sleep(min(poll_interval_s, max(0.0, end - clock())))
