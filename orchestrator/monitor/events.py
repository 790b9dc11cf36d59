"""Deploy, reload and rollout events of a deployment, for `tfsctl monitor report` to mark.

One JSON object per line in `.tfso/monitor/NAME/events.jsonl` (time, what). Appending a line is
atomic enough for a log: a torn last line is skipped when read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.state import StateStore


@dataclass(frozen=True)
class Event:
    time: float
    what: str


def path(store: StateStore, name: str) -> Any:
    return store.root / "monitor" / name / "events.jsonl"


def record(store: StateStore, name: str, what: str, *, now: float | None = None) -> None:
    where = path(store, name)
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        with open(where, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"time": time.time() if now is None else now, "what": what}) + "\n")
    except OSError:
        pass  # an event log must never fail a deploy


def read(store: StateStore, name: str, since: float = 0.0) -> list[Event]:
    events = []
    try:
        lines = path(store, name).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            doc = json.loads(line)
            event = Event(float(doc["time"]), str(doc["what"]))
        except (ValueError, KeyError, TypeError):
            continue
        if event.time >= since:
            events.append(event)
    return events
