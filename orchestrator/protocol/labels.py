"""The labels-mode files a rollout and its clients share: the weights file and the stats files.

The rollout writes `{"weights": {"stable": 90, "canary": 10}, "updated_at": ...}`; each client's
`LabelSplit` reads it and writes `{"bounds_us": [...], "labels": {label: {"requests", "errors",
"buckets"}}}`, which the rollout reads back. One schema, written and read here only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

# Latency buckets in microseconds: TF Serving's request_latency layout (10 µs × 1.8^i).
BUCKETS_US = [10 * 1.8**i for i in range(33)]


def weights_document(weights: Mapping[str, int], updated_at: float) -> str:
    return json.dumps({"weights": dict(weights), "updated_at": updated_at}) + "\n"


def parse_weights(text: str) -> dict[str, int]:
    """Weights by label (a bare {label: weight} map is accepted too); raises ValueError on junk."""
    data = json.loads(text)
    return {str(k): int(v) for k, v in data.get("weights", data).items() if int(v) >= 0}


def empty_cell() -> dict[str, Any]:
    return {"requests": 0, "errors": 0, "buckets": [0] * (len(BUCKETS_US) + 1)}


def stats_document(labels: Mapping[str, Any]) -> dict[str, Any]:
    return {"bounds_us": BUCKETS_US, "labels": labels}


def parse_stats(data: Mapping[str, Any]) -> Iterator[tuple[str, int, int, dict[float, float]]]:
    """(label, requests, errors, cumulative buckets {upper bound µs: count}) per label of a stats file."""
    bounds = [*data.get("bounds_us", []), float("inf")]
    for label, cell in data.get("labels", {}).items():
        running, buckets = 0.0, {}
        for bound, count in zip(bounds, cell.get("buckets", []), strict=False):
            running += count
            buckets[bound] = running
        yield label, cell.get("requests", 0), cell.get("errors", 0), buckets
