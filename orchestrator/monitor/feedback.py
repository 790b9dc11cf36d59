"""Accuracy from late labels: join `request_id,label` rows to logged predictions. Pure numpy.

Every answer carries a request id (X-Request-Id / gRPC metadata, the caller's or a generated one)
and the payload log stores it in each record's `request_origin`, so labels that arrive later join
exactly. A record of a batched request holds several rows: its rows join as `ID:ROW` (row index
from 0); a one-row request joins as `ID` (or `ID:0`).

The prediction of a row is taken from one output tensor (`--output`, or the only one): float
scores with 2+ columns give the argmax class index (classification), a string/integer column is
the class itself, one float column is a regression value. Labels compare as text for classes
(`2` and `2.0` are different labels: write them as the model answers) and as numbers for
regression (MAE, RMSE).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from orchestrator.monitor import MonitorError

FEEDBACK_FILE = "feedback.json"


@dataclass
class Prediction:
    version: int
    time: int
    value: Any  # class (str) or number


def read_labels(path: Any) -> dict[str, str]:
    """`request_id,label` rows (a header row `request_id,label` is skipped); last label wins."""
    labels: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.reader(fh), start=1):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if n == 1 and row[0].strip().lower() in ("request_id", "id"):
                    continue
                if len(row) != 2 or not row[0].strip():
                    raise MonitorError(
                        f"{path}, line {n}: expected `request_id,label`, got {row!r}",
                        fix="write one `request_id,label` pair per line (CSV)")
                labels[row[0].strip()] = row[1].strip()
    except FileNotFoundError:
        raise MonitorError(f"labels file {path} does not exist",
                           fix="pass a CSV of request_id,label with --labels") from None
    except UnicodeDecodeError as exc:
        raise MonitorError(f"labels file {path} is not UTF-8 text: {exc}",
                           fix="pass a CSV of request_id,label with --labels") from exc
    if not labels:
        raise MonitorError(f"labels file {path} has no labels", fix="add request_id,label rows")
    return labels


def _values(arr: np.ndarray, task: str) -> tuple[str, list[Any]]:
    rows = arr.reshape(arr.shape[0], -1) if arr.ndim else arr.reshape(1, 1)
    vals: list[Any]
    if rows.dtype == object or rows.dtype.kind in "US":
        kind = "classification"
        vals = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in rows[:, 0]]
    elif rows.shape[1] >= 2 and task != "regression":
        kind, vals = "classification", [str(int(i)) for i in rows.argmax(axis=1)]
    elif rows.dtype.kind in "iub" and task != "regression":
        kind, vals = "classification", [str(int(v)) for v in rows[:, 0]]
    else:
        kind, vals = "regression", [float(v) for v in rows[:, 0]]
    if task != "auto" and kind != task:
        raise MonitorError(f"the output gives {kind} values, not {task}",
                           fix="choose another --output, or --task auto")
    return kind, vals


def predictions(records: Iterable[Any], output: str | None, task: str = "auto"
                ) -> tuple[str, dict[str, Prediction]]:
    """request id (and `ID:ROW`) -> prediction, from PredictionLog records."""
    from orchestrator.protocol.tensors import from_tensor_proto

    out: dict[str, Prediction] = {}
    kind = ""
    for rec in records:
        md = rec.log_metadata
        outputs = rec.predict_log.response.outputs
        names = sorted(outputs)
        if not names:
            kind_vals = _example_values(rec, task)
            if kind_vals is not None:
                kind, vals = kind_vals
                _add(out, md, vals)
            continue
        if output is None and len(names) > 1:
            raise MonitorError(f"the model answers with several outputs ({', '.join(names)})",
                               fix="choose the prediction with --output NAME")
        name = output or names[0]
        if name not in outputs:
            raise MonitorError(f"no output {name!r} in the logged responses (they have "
                               f"{', '.join(names)})", fix="choose one of them with --output")
        kind, vals = _values(from_tensor_proto(outputs[name]), task)
        _add(out, md, vals)
    return kind, out


def _add(out: dict[str, Prediction], md: Any, vals: list[Any]) -> None:
    rid = md.request_origin
    version, ts = md.model_spec.version.value, md.timestamp_secs
    for i, v in enumerate(vals):
        out[f"{rid}:{i}"] = Prediction(version, ts, v)
    if len(vals) == 1:
        out[rid] = Prediction(version, ts, vals[0])


def _example_values(rec: Any, task: str) -> tuple[str, list[Any]] | None:
    """A Classify record's top classes, or a Regress record's values."""
    from orchestrator.monitor.payload import example_outputs

    which = rec.WhichOneof("log_type")
    if which not in ("classify_log", "regress_log"):
        return None
    kind = "classification" if which == "classify_log" else "regression"
    if task != "auto" and task != kind:
        raise MonitorError(f"the logged {which.split('_')[0]} calls give {kind} values, not {task}",
                           fix="use --task auto")
    got = example_outputs(which, getattr(rec, which).response)
    if kind == "regression":
        return kind, [float(v) for v in got["value"]]
    return kind, [str(v) for v in got["classes"]]


@dataclass
class Score:
    """Quality of one group of joined rows (a version, or a version in a time window)."""

    version: int
    start: int | None
    rows: int
    accuracy: float | None = None
    precision: dict[str, float] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)
    mae: float | None = None
    rmse: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def score(kind: str, version: int, start: int | None, pairs: list[tuple[Any, str]]) -> Score:
    """pairs: (prediction, label) rows."""
    s = Score(version, start, len(pairs))
    if not pairs:
        return s
    if kind == "regression":
        try:
            err = np.array([float(p) - float(y) for p, y in pairs])
        except ValueError as exc:
            raise MonitorError(f"a label is not a number: {exc}",
                               fix="regression labels are numbers") from exc
        s.mae = float(np.mean(np.abs(err)))
        s.rmse = float(math.sqrt(np.mean(err * err)))
        return s
    s.accuracy = sum(p == y for p, y in pairs) / len(pairs)
    for c in sorted({y for _, y in pairs} | {p for p, _ in pairs}):
        tp = sum(p == c and y == c for p, y in pairs)
        predicted = sum(p == c for p, _ in pairs)
        actual = sum(y == c for _, y in pairs)
        if predicted:
            s.precision[c] = tp / predicted
        if actual:
            s.recall[c] = tp / actual
    return s


@dataclass
class Feedback:
    kind: str
    labels: int
    joined: int
    versions: list[Score]
    windows: list[Score]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "labels": self.labels, "joined": self.joined,
                "unmatched": self.labels - self.joined,
                "versions": [s.to_json() for s in self.versions],
                "windows": [s.to_json() for s in self.windows]}


def join(kind: str, preds: Mapping[str, Prediction], labels: Mapping[str, str],
         every_s: float) -> Feedback:
    """Scores per version, and per version and time window of `every_s` seconds."""
    by_version: dict[int, list[tuple[Any, str]]] = {}
    by_window: dict[tuple[int, int], list[tuple[Any, str]]] = {}
    joined = 0
    for rid, label in labels.items():
        p = preds.get(rid)
        if p is None:
            continue
        joined += 1
        by_version.setdefault(p.version, []).append((p.value, label))
        start = int(p.time // every_s * every_s)
        by_window.setdefault((p.version, start), []).append((p.value, label))
    return Feedback(kind, len(labels), joined,
                    [score(kind, v, None, by_version[v]) for v in sorted(by_version)],
                    [score(kind, v, t, by_window[(v, t)]) for v, t in sorted(by_window)])
