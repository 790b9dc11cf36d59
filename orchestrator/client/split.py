"""Client-side traffic split across TF Serving version labels (the labels-mode canary).

TF Serving can serve `stable` and `canary` labels from one server, but it cannot split traffic
between them, and its metrics carry no version. So the client does both: `LabelSplit` picks
a label per request by weight (smooth weighted round robin: exact shares, no randomness) and
measures each label's requests, errors and latency. A rollout in labels mode publishes the
weights in a small JSON file and reads these measurements back from a stats file.

    split = LabelSplit(weights_file=".tfso/rollouts/demo.weights.json",
                       stats_file=".tfso/rollouts/demo.labels/client-1.json")
    label = split.choose()
    with split.measure(label):
        client.predict("demo", x, label=label)
"""

from __future__ import annotations

import bisect
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from orchestrator.files import write_atomic
from orchestrator.protocol.labels import BUCKETS_US, empty_cell, parse_weights, stats_document


class LabelSplit:
    def __init__(
        self,
        weights: Mapping[str, int] | None = None,
        *,
        weights_file: str | os.PathLike[str] | None = None,
        stats_file: str | os.PathLike[str] | None = None,
        refresh_s: float = 0.5,
    ) -> None:
        if weights is None and weights_file is None:
            raise ValueError("give weights or a weights_file")
        self._weights: dict[str, int] = dict(weights or {})
        self._weights_file = Path(weights_file) if weights_file else None
        self._stats_file = Path(stats_file) if stats_file else None
        self._refresh_s = refresh_s
        self._current: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._flushed_at = 0.0
        self._stats: dict[str, dict[str, float | list[int]]] = {}
        self._mtime = -1.0
        self._reload(force=True)

    # -- weights ------------------------------------------------------------------------------

    def _reload(self, force: bool = False) -> None:
        if self._weights_file is None:
            return
        now = time.monotonic()
        if not force and now - self._loaded_at < self._refresh_s:
            return
        self._loaded_at = now
        try:
            mtime = self._weights_file.stat().st_mtime
            if mtime == self._mtime:
                return
            weights = parse_weights(self._weights_file.read_text())
        except (OSError, ValueError):
            return  # keep the last good weights
        self._mtime = mtime
        if weights and weights != self._weights:
            self._weights = weights
            self._current = {}

    @property
    def weights(self) -> dict[str, int]:
        return dict(self._weights)

    def choose(self) -> str:
        """The next label: smooth weighted round robin, so shares are exact over any window."""
        with self._lock:
            self._reload()
            live = {k: w for k, w in self._weights.items() if w > 0}
            if not live:
                return "stable"
            total = sum(live.values())
            for label, weight in live.items():
                self._current[label] = self._current.get(label, 0) + weight
            best = max(live, key=lambda k: self._current[k])
            self._current[best] -= total
            return best

    # -- measurements -------------------------------------------------------------------------

    @contextmanager
    def measure(self, label: str) -> Iterator[None]:
        start = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.record(label, ok, time.perf_counter() - start)

    def record(self, label: str, ok: bool, latency_s: float) -> None:
        with self._lock:
            cell = self._stats.setdefault(label, empty_cell())
            cell["requests"] += 1  # type: ignore[operator]
            if not ok:
                cell["errors"] += 1  # type: ignore[operator]
            cell["buckets"][bisect.bisect_left(BUCKETS_US, latency_s * 1e6)] += 1  # type: ignore[index]
            if (
                self._stats_file is not None
                and time.monotonic() - self._flushed_at >= self._refresh_s
            ):
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._stats_file is None:
            return
        self._flushed_at = time.monotonic()
        write_atomic(self._stats_file, json.dumps(stats_document(self._stats)))

    def stats(self) -> dict[str, dict[str, float | list[int]]]:
        with self._lock:
            return json.loads(json.dumps(self._stats))
