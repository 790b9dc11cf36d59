"""Reading payload logs back: the PredictionLog TFRecord files the server writes (server/payload_log).

Pure Python framing (8-byte length, 4-byte CRC, data, 4-byte CRC), so listing logs does not
import TensorFlow (records parse with orchestrator/protos/prediction_log.proto, a field-for-field
copy of upstream's Predict, Classify, Regress and MultiInference branches); CRCs are not checked here (TF's reader checks them in the tests). A truncated
last record (a file still being written) ends that file quietly.
"""

from __future__ import annotations

import glob
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchestratorError


class PayloadLogError(OrchestratorError):
    pass


def log_prefix(spec: Any) -> str:
    """Where NAME's records are: the spec's `logging.path`/NAME (the rendered filename_prefix)."""
    if spec.logging is None:
        raise PayloadLogError(
            f"{spec.name} has no payload logging configured",
            fix="add `logging: {sample: 0.01, path: ../logs}` to its spec and redeploy",
        )
    return f"{spec.logging.path}/{spec.name}"


def log_files(prefix: str, since_ts: float | None = None) -> list[str]:
    """Files in time order; with since_ts, those that may hold records at or after it.

    Every replica writes its own files under the same prefix, so a file opened before another
    may still be written after it: the test is the file's last write (a record is written after
    its timestamp; a second of slack for timestamps kept in whole seconds), not the next name.
    """
    files = sorted(glob.glob(glob.escape(prefix) + "-*.tfrecord"))
    if since_ts is None:
        return files
    keep = []
    for f in files:
        try:
            if os.path.getmtime(f) >= since_ts - 1.0:
                keep.append(f)
        except OSError:  # rotated away since it was listed
            continue
    return keep


def raw_records(path: str) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while True:
            head = fh.read(12)
            if len(head) < 12:
                return
            (length,) = struct.unpack("<Q", head[:8])
            data = fh.read(length)
            tail = fh.read(4)
            if len(data) < length or len(tail) < 4:
                return
            yield data


def read_logs(
    prefix: str,
    *,
    since_s: float | None = None,
    version: int | None = None,
    now: float | None = None,
) -> Iterator[Any]:
    """PredictionLog messages (our wire-compatible copy) in time order, by age and version."""
    from orchestrator.protos import prediction_log_pb2

    since_ts = None if since_s is None else (now or time.time()) - since_s
    for f in log_files(prefix, since_ts):
        for data in raw_records(f):
            rec = prediction_log_pb2.PredictionLog.FromString(data)
            md = rec.log_metadata
            if since_ts is not None and md.timestamp_secs < int(since_ts):
                continue
            if version is not None and md.model_spec.version.value != version:
                continue
            yield rec


def _tensor(proto: Any) -> Any:
    from orchestrator.protocol.tensors import from_tensor_proto

    arr = from_tensor_proto(proto)
    if arr.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr.ravel()]
    return arr.tolist()


def _feature_values(feature: Any) -> list[Any]:
    which = feature.WhichOneof("kind")
    if which is None:
        return []
    values = list(getattr(feature, which).value)
    if which == "bytes_list":
        return [v.decode("utf-8", "replace") for v in values]
    return values


def example_rows(examples: Any) -> dict[str, list[list[Any]]]:
    """Feature name -> one list of values per example (tf.Example in a Classify/Regress log)."""
    out: dict[str, list[list[Any]]] = {}
    for i, ex in enumerate(examples):
        for name, feature in ex.features.feature.items():
            rows = out.setdefault(name, [[] for _ in range(i)])
            rows.append(_feature_values(feature))
        for rows in out.values():
            if len(rows) < i + 1:
                rows.append([])
    return out


def example_outputs(kind: str, response: Any) -> dict[str, list[Any]]:
    """A Classify response as `classes` (the top label, or its index when unlabelled) and
    `scores`; a Regress response as `value`."""
    if kind == "regress_log":
        return {"value": [r.value for r in response.result.regressions]}
    top: list[Any] = []
    scores: list[list[float]] = []
    for c in response.result.classifications:
        row = list(c.classes)
        scores.append([k.score for k in row])
        best = max(range(len(row)), key=lambda j: row[j].score) if row else 0
        top.append((row[best].label or best) if row else "")
    return {"classes": top, "scores": scores}


def record_dict(rec: Any) -> dict[str, Any]:
    """One record as JSON-able data (what `tfsctl logs --predictions -o json` prints)."""
    md = rec.log_metadata
    kind = rec.WhichOneof("log_type") or ""
    body = getattr(rec, kind) if kind else None
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    if kind == "predict_log" and body is not None:
        inputs = {k: _tensor(v) for k, v in sorted(body.request.inputs.items())}
        outputs = {k: _tensor(v) for k, v in sorted(body.response.outputs.items())}
    elif kind in ("classify_log", "regress_log") and body is not None:
        inputs = dict(sorted(example_rows(body.request.input.example_list.examples).items()))
        outputs = example_outputs(kind, body.response)
    elif kind == "multi_inference_log" and body is not None:  # outputs per task: SIGNATURE/name
        from types import SimpleNamespace

        inputs = dict(sorted(example_rows(body.request.input.example_list.examples).items()))
        for res in body.response.results:
            classify = res.WhichOneof("result") == "classification_result"
            part = SimpleNamespace(result=res.classification_result if classify else res.regression_result)
            for key, value in example_outputs("classify_log" if classify else "regress_log", part).items():
                outputs[f"{res.model_spec.signature_name}/{key}"] = value
    return {
        "time": md.timestamp_secs,
        "request_id": md.request_origin,
        "model": md.model_spec.name,
        "version": md.model_spec.version.value,
        "signature": md.model_spec.signature_name,
        "kind": kind,
        "inputs": inputs,
        "outputs": outputs,
    }


def short(value: Any, width: int = 40) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def spec_for(name: str, configs_dir: Path) -> Any:
    from orchestrator.spec import load_spec

    return load_spec(name, configs_dir=configs_dir)


def exists(prefix: str) -> bool:
    return os.path.isdir(os.path.dirname(prefix)) and bool(log_files(prefix))
