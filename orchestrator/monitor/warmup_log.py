"""`tfsctl warmup NAME --from-log`: logged Predict requests become TF Serving warmup records.

Warmup files are TFRecord files of PredictionLog, the same message the payload log holds, so the
newest logged requests are copied with their responses and metadata dropped (TF Serving replays
only the request).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from orchestrator.monitor import payload


def warmup_from_log(
    name: str, model: str, version: int, version_dir: Path, configs_dir: Path, *, count: int,
    signature: str,
) -> dict[str, Any]:
    from tensorflow_serving.apis import prediction_log_pb2

    from orchestrator.convert.warmup import read_records, write_records

    prefix = payload.log_prefix(payload.spec_for(name, configs_dir))
    wanted = {signature} | ({""} if signature == "serving_default" else set())
    newest: deque = deque(maxlen=count)
    for rec in payload.read_logs(prefix):
        if rec.WhichOneof("log_type") != "predict_log":
            continue
        if rec.log_metadata.model_spec.signature_name not in wanted:
            continue
        newest.append(rec.predict_log.request)
    if not newest:
        raise payload.PayloadLogError(
            f"no logged Predict requests for {model} (signature {signature}) under {prefix}-*",
            fix="send some traffic with logging on (spec `logging: {sample: ...}`), or use "
            "--samples",
        )
    records = []
    for request in newest:
        out = prediction_log_pb2.PredictionLog()
        out.predict_log.request.ParseFromString(request.SerializeToString())  # ours -> upstream
        out.predict_log.request.model_spec.name = model
        out.predict_log.request.model_spec.ClearField("version")
        records.append(out)
    path = write_records(version_dir, records)
    return {"model": model, "version": version, "path": str(path),
            "records": len(read_records(path)), "source": f"{prefix}-*.tfrecord"}
