"""TF Serving warmup records: `assets.extra/tf_serving_warmup_requests` in a version folder.

TF Serving replays these PredictionLog records (a TFRecord file, at most 1000 records) when it
loads the version, so the first real request does not pay for lazy initialisation. Records are
built with the upstream `tensorflow_serving.apis` protos, one Predict request per record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.convert.errors import ConvertError
from orchestrator.convert.samples import Samples

WARMUP_RELATIVE_PATH = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's limit (kMaxNumRecordsInWarmupFile)
DEFAULT_COUNT = 10


def check_count(count: int) -> int:
    if not 1 <= count <= MAX_RECORDS:
        raise ConvertError(
            f"--count {count}: TF Serving replays 1 to {MAX_RECORDS} warmup records",
            fix=f"pick a count from 1 to {MAX_RECORDS}",
        )
    return count


def build_records(
    samples: Samples, *, model_name: str, signature_key: str, count: int, batch_size: int = 1
) -> list[Any]:
    """`count` PredictionLog messages, cycling through the samples `batch_size` at a time."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    check_count(count)
    if batch_size < 1:
        raise ConvertError("--batch-size must be 1 or more")
    records = []
    for r in range(count):
        start = (r * batch_size) % samples.count
        rows = [(start + j) % samples.count for j in range(batch_size)]
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_key)
        )
        for name, array in samples.arrays.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array[rows]))
        records.append(
            prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        )
    return records


def write_records(version_dir: Path, records: Sequence[Any]) -> Path:
    """Write the TFRecord file atomically into the version folder; returns its path."""
    import tensorflow as tf

    if not 1 <= len(records) <= MAX_RECORDS:
        raise ConvertError(f"{len(records)} warmup records: TF Serving takes 1 to {MAX_RECORDS}")
    path = Path(version_dir) / WARMUP_RELATIVE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    tmp.replace(path)
    return path


def read_records(path: Path) -> list[Any]:
    """Parse a warmup file back into PredictionLog messages (what TF Serving does at load)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(raw)
        logs.append(log)
    return logs


def write_warmup(
    version_dir: Path,
    samples: Samples,
    *,
    model_name: str,
    signature_key: str,
    count: int = DEFAULT_COUNT,
    batch_size: int = 1,
) -> Path:
    records = build_records(
        samples, model_name=model_name, signature_key=signature_key, count=count,
        batch_size=batch_size,
    )
    return write_records(version_dir, records)


__all__ = [
    "DEFAULT_COUNT",
    "MAX_RECORDS",
    "WARMUP_RELATIVE_PATH",
    "build_records",
    "check_count",
    "read_records",
    "write_records",
    "write_warmup",
]
