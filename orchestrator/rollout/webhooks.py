"""Webhooks as Flagger has them: a CI gates a rollout on its own checks.

`pre-rollout` runs before the canary starts, `step` before each weight increase, `promote`
before promotion: each is an HTTP POST of the rollout status as JSON, and anything but a 2xx
answer stops that move (a failed `pre-rollout` or `promote` rolls back; a failed `step` counts
as a failed check). `rollback` is a notification: its answer is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import requests

from orchestrator.errors import RolloutError
from orchestrator.rollout.machine import Status

KINDS = ("pre-rollout", "step", "promote", "rollback")


@dataclass(frozen=True)
class Webhooks:
    hooks: Mapping[str, Sequence[str]] = field(default_factory=dict)
    timeout_s: float = 10.0

    @classmethod
    def parse(cls, items: Sequence[str]) -> Webhooks:
        hooks: dict[str, list[str]] = {}
        for item in items:
            kind, sep, url = item.partition("=")
            if not sep or kind not in KINDS or not url.startswith(("http://", "https://")):
                raise RolloutError(f"--webhook {item!r} is not KIND=URL",
                                   fix=f"KIND is one of {', '.join(KINDS)}; e.g. --webhook step=http://127.0.0.1:9000/check")
            hooks.setdefault(kind, []).append(url)
        return cls(hooks)

    def _post(self, url: str, kind: str, status: Status) -> requests.Response:
        body = {"kind": kind, "name": status.name, "model": status.model, "phase": status.phase.value,
                "weight": status.weight, "from_version": status.from_version, "to_version": status.to_version,
                "message": status.message}
        return requests.post(url, json=body, timeout=self.timeout_s)

    def call(self, kind: str, status: Status) -> None:
        for url in self.hooks.get(kind, ()):
            try:
                response = self._post(url, kind, status)
            except requests.RequestException as exc:
                raise RolloutError(f"{kind} webhook {url} did not answer: {exc}") from exc
            if not 200 <= response.status_code < 300:
                raise RolloutError(f"{kind} webhook {url} answered {response.status_code}: {response.text[:200]}")

    def notify(self, kind: str, status: Status) -> None:
        for url in self.hooks.get(kind, ()):
            try:
                self._post(url, kind, status)
            except requests.RequestException:
                pass
