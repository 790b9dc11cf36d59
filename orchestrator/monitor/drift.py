"""Drift without labels: reference distributions (a baseline) and PSI / Jensen-Shannon per feature.

A *feature* is one column of a logged tensor: an input or output tensor of shape [batch, k] gives
k features `name[i]` (or `name` when k is 1); a wider tensor (k > MAX_COLUMNS, an image) is one
feature of all its values. Every row of a batch counts once. A float output with 2+ columns (class
scores) also gives `name:class`, the argmax, so a classifier's class counts are compared too.

Numeric features get quantile bins from the baseline (BINS equal-mass bins, ties merged, open at
both ends); strings, bools and integers with few distinct values are categorical (class counts,
plus `<other>` for what the baseline never saw). PSI = sum (a - e) ln(a / e) and the
Jensen-Shannon distance (base 2, in [0, 1]) are computed on those bins, both with proportions
floored at EPS so an empty bin is finite. Pure numpy: `tfsctl monitor drift`, the exporter and the
rollout gate call the same functions.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from orchestrator.monitor import MonitorError

BINS = 10
MAX_COLUMNS = 16
MAX_CATEGORIES = 20
EPS = 1e-4
OTHER = "<other>"
BASELINE_FILE = "baseline.json"
PARALLEL_MIN_BYTES = 8 << 20  # below this, starting worker processes costs more than it saves


@dataclass
class FeatureRef:
    """One feature's reference distribution."""

    name: str
    kind: str  # "numeric" | "categorical"
    side: str  # "input" | "output"
    count: int
    probs: list[float]
    edges: list[float] = field(default_factory=list)  # numeric: interior cut points
    categories: list[str] = field(default_factory=list)  # categorical, then OTHER


@dataclass
class Baseline:
    model: str
    source: str
    created: float
    rows: int
    features: list[FeatureRef]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Baseline:
        return Baseline(model=data["model"], source=data["source"], created=data["created"],
                        rows=data["rows"], features=[FeatureRef(**f) for f in data["features"]])


# -- columns from tensors --------------------------------------------------------------------------

def _rows(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 0:
        return arr.reshape(1, 1)
    return arr.reshape(arr.shape[0], -1)


def tensor_columns(name: str, arr: np.ndarray, side: str) -> dict[str, np.ndarray]:
    """The features of one [batch, ...] tensor (see the module docstring)."""
    rows = _rows(arr)
    if rows.dtype == object:
        rows = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                         for v in rows.ravel()], dtype=object).reshape(rows.shape)
    width = rows.shape[1]
    out: dict[str, np.ndarray] = {}
    if width > MAX_COLUMNS:
        out[name] = rows.ravel()
    elif width == 1:
        out[name] = rows[:, 0]
    else:
        for i in range(width):
            out[f"{name}[{i}]"] = rows[:, i]
    if side == "output" and width >= 2 and rows.dtype.kind == "f" and width <= 1000:
        out[f"{name}:class"] = rows.argmax(axis=1).astype(np.int64)
    return out


def columns(tensors: Mapping[str, np.ndarray], side: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, arr in tensors.items():
        out.update(tensor_columns(name, arr, side))
    return out


# -- reference distributions -----------------------------------------------------------------------

def _is_categorical(values: np.ndarray) -> bool:
    if values.dtype == object or values.dtype.kind in "bUS":
        return True
    if values.dtype.kind in "iu":
        return len(np.unique(values)) <= MAX_CATEGORIES
    return False


def reference(name: str, side: str, values: np.ndarray) -> FeatureRef:
    values = np.asarray(values)
    if len(values) == 0:
        raise MonitorError(f"feature {name!r} has no values to build a baseline from",
                           fix="give more samples (or a longer --since window)")
    if _is_categorical(values):
        cats, counts = np.unique(values.astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")[:MAX_CATEGORIES]
        kept = [str(c) for c in cats[order]]
        probs = (counts[order] / len(values)).tolist()
        probs.append(max(0.0, 1.0 - sum(probs)))
        return FeatureRef(name, "categorical", side, len(values), probs, categories=kept)
    floats = values.astype(np.float64)
    floats = floats[np.isfinite(floats)]
    if len(floats) == 0:
        raise MonitorError(f"feature {name!r} has no finite values", fix="check the samples")
    qs = np.quantile(floats, np.linspace(0, 1, BINS + 1)[1:-1])
    edges = np.unique(qs)
    probs = histogram(floats, edges)
    return FeatureRef(name, "numeric", side, len(floats), probs.tolist(), edges=edges.tolist())


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Proportions in the bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    idx = np.searchsorted(edges, values, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    return counts / max(1, len(values))


def proportions(ref: FeatureRef, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if ref.kind == "numeric":
        floats = values.astype(np.float64)
        return histogram(floats[np.isfinite(floats)], np.asarray(ref.edges))
    text = values.astype(str)
    index = {c: i for i, c in enumerate(ref.categories)}
    cats, counts = np.unique(text, return_counts=True)
    out = np.zeros(len(ref.categories) + 1)
    for c, n in zip(cats, counts, strict=True):
        out[index.get(str(c), len(ref.categories))] += n
    return out / max(1, len(values))


def psi(expected: Any, actual: Any) -> float:
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPS)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def js_distance(expected: Any, actual: Any) -> float:
    p = np.maximum(np.asarray(expected, dtype=np.float64), EPS)
    q = np.maximum(np.asarray(actual, dtype=np.float64), EPS)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    div = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    return float(math.sqrt(max(0.0, div)))


def build_baseline(model: str, source: str, inputs: Mapping[str, np.ndarray],
                   outputs: Mapping[str, np.ndarray] | None = None, *,
                   split: bool = True) -> Baseline:
    """From tensors ([batch, ...] arrays; split=True) or from feature columns (split=False)."""
    ins = columns(inputs, "input") if split else inputs
    outs = columns(outputs or {}, "output") if split else (outputs or {})
    feats = [reference(n, "input", v) for n, v in ins.items()]
    feats += [reference(n, "output", v) for n, v in outs.items()]
    if not feats:
        raise MonitorError("no features to build a baseline from",
                           fix="give samples with at least one input tensor")
    rows = max(f.count for f in feats)
    return Baseline(model, source, time.time(), rows, feats)


# -- drift -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    side: str
    kind: str
    rows: int
    psi: float
    js: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def drift(baseline: Baseline, cols: Mapping[str, np.ndarray]) -> list[FeatureDrift]:
    """Drift of every baseline feature present in `cols` (one version's window)."""
    out = []
    for ref in baseline.features:
        values = cols.get(ref.name)
        if values is None or len(values) == 0:
            continue
        actual = proportions(ref, values)
        out.append(FeatureDrift(ref.name, ref.side, ref.kind, len(values),
                                psi(ref.probs, actual), js_distance(ref.probs, actual)))
    return out


def compare(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], side: str = "output"
            ) -> list[FeatureDrift]:
    """Drift of window `b` against window `a` (a canary against stable): `a` is the reference."""
    ref = Baseline("", "window", time.time(), 0,
                   [reference(n, side, v) for n, v in a.items() if len(v)])
    return drift(ref, b)


def max_psi(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """The number a rollout gate compares with --max-drift: the worst feature's PSI (0 if none)."""
    return max((d.psi for d in compare(a, b)), default=0.0)


# -- columns from payload logs ---------------------------------------------------------------------

class _Acc:
    """Per (version, side, tensor): tensor_content chunks of one dtype, joined once at the end.

    Rows are counted from each chunk's first dimension; the row width comes from the first chunk
    and is checked against the total, so a tensor whose shape changed falls back to decoding.
    """

    __slots__ = ("arrays", "chunks", "enum", "rows", "width")

    def __init__(self, enum: int, width: int) -> None:
        self.chunks: list[bytes] = []
        self.rows = 0
        self.arrays: list[np.ndarray] = []
        self.enum = enum
        self.width = width

    def array(self) -> np.ndarray:
        from orchestrator.protocol.tensors import array_from_content

        parts = list(self.arrays)
        if self.chunks:
            blob = b"".join(self.chunks)
            parts.insert(0, array_from_content(blob, self.enum, (self.rows, self.width)))
        if not parts:
            return np.empty((0, 1))
        if len(parts) == 1:
            return parts[0]
        width = parts[0].shape[1]
        return np.concatenate([p for p in parts if p.shape[1] == width])


def _first_chunk(proto: Any) -> tuple[int, int, int] | None:
    """(dtype, rows, width) of a tensor_content tensor of shape [rows, ...]; None otherwise."""
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.dtype == 7 or not proto.tensor_content or not dims:  # 7: DT_STRING
        return None
    return proto.dtype, dims[0], math.prod(dims[1:])


@dataclass
class Window:
    """What one read of the logs gives: columns per version, the rows and the time span."""

    columns: dict[int, dict[str, np.ndarray]]
    rows: dict[int, int]
    first: float | None
    last: float | None
    sides: dict[str, str] = field(default_factory=dict)  # feature -> "input" | "output"

    def tensors(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every version's rows together, split into input and output features."""
        merged: dict[str, list[np.ndarray]] = {}
        for v in sorted(self.columns):
            for k, arr in self.columns[v].items():
                merged.setdefault(k, []).append(arr)
        ins: dict[str, np.ndarray] = {}
        outs: dict[str, np.ndarray] = {}
        for k, parts in merged.items():
            (outs if self.sides.get(k) == "output" else ins)[k] = np.concatenate(parts)
        return ins, outs


def read_window(records: Iterable[Any], *, since_ts: float | None = None,
                version: int | None = None) -> Window:
    """Columns per version from PredictionLog records (orchestrator's wire copy).

    The hot loop touches each record's fields once and defers decoding to one join per tensor
    (rows = bytes / row width, checked when joined), so a million logged rows read in seconds.
    """
    from orchestrator.protocol.tensors import from_tensor_proto

    accs: dict[tuple[int, int, str], _Acc] = {}
    first = last = None
    low = -1 if since_ts is None else int(since_ts)
    for rec in records:
        md = rec.log_metadata
        ts = md.timestamp_secs
        if ts < low:
            continue
        v = md.model_spec.version.value
        if version is not None and v != version:
            continue
        if first is None or ts < first:
            first = ts
        if last is None or ts > last:
            last = ts
        log = rec.predict_log
        if not log.request.inputs:  # Classify / Regress: tf.Examples in, classes or values out
            _examples_into(accs, rec, v)
            continue
        for side, tensors in ((0, log.request.inputs), (1, log.response.outputs)):
            for name in tensors:
                proto = tensors[name]
                key = (v, side, name)
                acc = accs.get(key)
                if acc is None:
                    head = _first_chunk(proto)
                    acc = accs[key] = _Acc(*(head[0], head[2]) if head else (-1, 0))
                content = proto.tensor_content
                if content and proto.dtype == acc.enum:
                    acc.chunks.append(content)
                else:
                    acc.arrays.append(_rows(from_tensor_proto(proto)))
    return _columns(accs, first, last)


def _examples_into(accs: dict[tuple[int, int, str], _Acc], rec: Any, version: int) -> None:
    from orchestrator.monitor.payload import example_outputs, example_rows

    kind = rec.WhichOneof("log_type")
    if kind not in ("classify_log", "regress_log"):
        return
    body = getattr(rec, kind)
    parts = [(0, example_rows(body.request.input.example_list.examples)),
             (1, example_outputs(kind, body.response))]
    for side, named in parts:
        for name, rows in named.items():
            arr = _list_rows(rows)
            if arr is None:
                continue
            key = (version, side, name)
            acc = accs.get(key)
            if acc is None:
                acc = accs[key] = _Acc(-1, 0)
            acc.arrays.append(arr)


def _list_rows(rows: list[Any]) -> np.ndarray | None:
    """Values per example as a [n, k] array; None when examples carry different counts."""
    if not rows:
        return None
    if not isinstance(rows[0], list):
        rows = [[r] for r in rows]
    if len({len(r) for r in rows}) != 1 or not rows[0]:
        return None
    arr = np.array(rows)
    return arr.astype(object) if arr.dtype.kind in "US" else arr


def _columns(accs: Mapping[tuple[int, int, str], _Acc], first: float | None,
             last: float | None) -> Window:
    from orchestrator.protocol.tensors import enum_to_numpy_dtype, from_tensor_proto

    cols: dict[int, dict[str, np.ndarray]] = {}
    rows: dict[int, int] = {}
    sides: dict[str, str] = {}
    for (version, side, name), acc in sorted(accs.items()):
        if acc.chunks:
            size = enum_to_numpy_dtype(acc.enum).itemsize
            total = sum(len(c) for c in acc.chunks) // size
            if acc.width and total % acc.width == 0:
                acc.rows = total // acc.width
            else:  # row widths changed inside the window: one flat column of the values
                acc.arrays = [_rows(from_tensor_proto(_proto(acc.enum, c, size)))
                              for c in acc.chunks] + acc.arrays
                acc.chunks = []
        arr = acc.array()
        features = tensor_columns(name, arr, "input" if side == 0 else "output")
        cols.setdefault(version, {}).update(features)
        sides.update(dict.fromkeys(features, "input" if side == 0 else "output"))
        if side == 0:
            rows[version] = max(rows.get(version, 0), int(arr.shape[0]))
    return Window(cols, rows, None if first is None else float(first),
                  None if last is None else float(last), sides)


def _proto(enum: int, content: bytes, size: int) -> Any:
    """A flat [n] tensor of `content` (the fallback when row widths are unknown)."""
    from orchestrator.protocol.tensors import TensorProto

    proto = TensorProto(tensor_content=content)
    proto.dtype = enum  # type: ignore[assignment]
    proto.tensor_shape.dim.add().size = len(content) // size
    proto.tensor_shape.dim.add().size = 1
    return proto


# -- storage -----------------------------------------------------------------------------------------

def save(path: Any, baseline: Baseline) -> None:
    from orchestrator.state import write_atomic

    write_atomic(path, json.dumps(baseline.to_json(), indent=1) + "\n")


def load(path: Any, name: str) -> Baseline:
    try:
        with open(path, encoding="utf-8") as fh:
            return Baseline.from_json(json.load(fh))
    except FileNotFoundError:
        raise MonitorError(f"{name} has no drift baseline ({path})",
                           fix=f"make one: `tfsctl monitor baseline {name} --samples train.npz` "
                               "or `--from-log --since 1d`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise MonitorError(f"drift baseline {path} is unreadable: {exc}",
                           fix=f"make it again with `tfsctl monitor baseline {name}`") from exc


# -- reading a log window (files in parallel) --------------------------------------------------------

def _file_records(path: str) -> Iterable[Any]:
    """PredictionLog messages of one TFRecord file (a truncated last record ends it quietly)."""
    from orchestrator.protos import prediction_log_pb2

    parse = prediction_log_pb2.PredictionLog.FromString
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except FileNotFoundError:  # rotated away since it was listed
        return
    view = memoryview(blob)
    pos, end = 0, len(blob)
    unpack = struct.Struct("<Q").unpack_from
    while pos + 12 <= end:
        (length,) = unpack(blob, pos)
        start = pos + 12
        if start + length + 4 > end:
            return
        yield parse(view[start:start + length])
        pos = start + length + 4


def _read_files(files: list[str], since_ts: float | None, version: int | None) -> Window:
    def records() -> Iterable[Any]:
        for f in files:
            yield from _file_records(f)

    return read_window(records(), since_ts=since_ts, version=version)


def merge(windows: list[Window]) -> Window:
    cols: dict[int, dict[str, list[np.ndarray]]] = {}
    rows: dict[int, int] = {}
    for w in windows:
        for v, c in w.columns.items():
            for k, arr in c.items():
                cols.setdefault(v, {}).setdefault(k, []).append(arr)
        for v, n in w.rows.items():
            rows[v] = rows.get(v, 0) + n
    firsts = [w.first for w in windows if w.first is not None]
    lasts = [w.last for w in windows if w.last is not None]
    sides: dict[str, str] = {}
    for w in windows:
        sides.update(w.sides)
    return Window({v: {k: np.concatenate(parts) for k, parts in c.items()} for v, c in cols.items()},
                  rows, min(firsts) if firsts else None, max(lasts) if lasts else None, sides)


def load_window(prefix: str, *, since_s: float | None = None, version: int | None = None,
                now: float | None = None, workers: int | None = None) -> Window:
    """The logged rows of the last `since_s` seconds (all when None), per version.

    Files are split over `workers` processes (default: the CPUs, at most 4) when there are
    several and they hold more than a few MB: parsing records is the cost, and it is per record.
    """
    import os

    from orchestrator.monitor.payload import log_files

    since_ts = None if since_s is None else (now or time.time()) - since_s
    files = log_files(prefix, since_ts)
    size = 0
    for f in files:
        with contextlib.suppress(OSError):
            size += os.path.getsize(f)
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(files) < 2 or size < PARALLEL_MIN_BYTES:
        return _read_files(files, since_ts, version)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Contiguous runs of files of about equal size, one per worker.
    shares: list[list[str]] = [[] for _ in range(min(workers, len(files)))]
    per, acc, i = size / len(shares), 0.0, 0
    for f in files:
        shares[i].append(f)
        with contextlib.suppress(OSError):
            acc += os.path.getsize(f)
        if acc >= per * (i + 1) and i < len(shares) - 1:
            i += 1
    shares = [s for s in shares if s]
    with ProcessPoolExecutor(len(shares), mp_context=multiprocessing.get_context("fork")) as pool:
        parts = list(pool.map(_read_files, shares, [since_ts] * len(shares),
                              [version] * len(shares)))
    return merge(parts)
