"""Payload logging on a real server: TF Serving's logging_config -> PredictionLog TFRecord files.

The models.config is rendered from a spec by the plan (the same text every runtime gets); records
are read back with TF's own TFRecord reader and parsed with the upstream PredictionLog proto.
"""

from __future__ import annotations

import glob
import math
import re
import resource
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from orchestrator.plan import model_config, models_config_text
from orchestrator.protocol.tensors import from_tensor_proto
from orchestrator.spec import Spec
from tests.helpers.server import SERVER_CMD, ServerProcess, export_half_plus_two_tf1, wait_until

pytestmark = pytest.mark.integration

MONITORING = 'prometheus_config { enable: true path: "/metrics" }\n'


def _config(root: Path, name: str, base: str, sample: float, path: Path, max_mb: float) -> list[str]:
    spec = Spec.model_validate(
        {"name": name, "base_path": base, "logging": {"sample": sample, "path": str(path),
                                                      "max_mb": max_mb}}
    )
    (root / "models.config").write_text(models_config_text([model_config(spec)]))
    (root / "monitoring.config").write_text(MONITORING)
    return [f"--model_config_file={root / 'models.config'}",
            f"--monitoring_config_file={root / 'monitoring.config'}"]


def _metric(srv: ServerProcess, name: str, **labels: str) -> float:
    text = requests.get(f"{srv.rest_url}/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _records(prefix: Path) -> list[prediction_log_pb2.PredictionLog]:
    out = []
    for f in sorted(glob.glob(f"{prefix}-*.tfrecord")):
        for raw in tf.data.TFRecordDataset(f):
            out.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
    return out


def _predict(srv: ServerProcess, model: str, x: float, rid: str) -> requests.Response:
    return requests.post(f"{srv.rest_url}/v1/models/{model}:predict",
                         json={"instances": [[x]]}, headers={"X-Request-Id": rid}, timeout=30)


def test_sampling_rate_and_records_parse_with_upstream_protos(tmp_path: Path) -> None:
    base = export_half_plus_two_tf1(tmp_path / "m", versions=(1,))
    logs = tmp_path / "logs"
    rate, n = 0.2, 2500
    args = _config(tmp_path, "plog", base, rate, logs, 64)
    with ServerProcess(args, env={"TFS_PAYLOAD_LOG_QUEUE": "100000"}) as srv:
        srv.wait_until_available("plog")
        with requests.Session() as s:
            for i in range(n):
                r = s.post(f"{srv.rest_url}/v1/models/plog:predict",
                           json={"instances": [[float(i)]]},
                           headers={"X-Request-Id": f"rid-{i}"}, timeout=30)
                assert r.status_code == 200
        def caught_up() -> float | None:
            """records_total once every sample taken is written or dropped (the writer gathers
            samples between writes, so the count alone can pause mid-way)."""
            text = requests.get(f"{srv.rest_url}/metrics", timeout=10).text
            values = {name: sum(float(v) for v in re.findall(
                rf'^tfso_{name}\{{model="plog"[^}}]*\}} (\S+)$', text, re.M))
                for name in ("prediction_log_sampled_total", "prediction_log_records_total",
                             "prediction_log_dropped_total")}
            done = values["prediction_log_records_total"] + values["prediction_log_dropped_total"]
            if values["prediction_log_sampled_total"] == done > 0:
                return values["prediction_log_records_total"]
            return None

        written = wait_until(caught_up, timeout_s=30, what="the writer to catch up")
        assert _metric(srv, "tfso_prediction_log_dropped_total", model="plog",
                       reason="queue_full") == 0
    records = wait_until(lambda: (lambda r: r if len(r) == written else None)(
        _records(logs / "plog")), timeout_s=30, what="all records on disk")
    # Binomial(n, rate): 4.5 sigma either side (a false failure about once in 150,000 runs).
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(len(records) - n * rate) < 4.5 * sigma, (len(records), n * rate)
    seen = set()
    for rec in records:
        md = rec.log_metadata
        assert md.model_spec.name == "plog" and md.model_spec.version.value == 1
        assert md.model_spec.signature_name == "serving_default"
        assert md.sampling_config.sampling_rate == pytest.approx(rate)
        assert md.timestamp_secs > 1_600_000_000
        i = int(md.request_origin.removeprefix("rid-"))
        seen.add(i)
        x = from_tensor_proto(rec.predict_log.request.inputs["x"])
        y = from_tensor_proto(rec.predict_log.response.outputs["y"])
        assert x.tolist() == [[float(i)]]
        assert y.tolist() == [[0.5 * i + 2.0]]
        assert rec.predict_log.response.model_spec.version.value == 1
    assert len(seen) == len(records)


def test_rotation_keeps_folder_under_max_mb(tmp_path: Path) -> None:
    base = export_half_plus_two_tf1(tmp_path / "m", versions=(1,))
    logs = tmp_path / "logs"
    max_mb = 0.25  # 256 KiB: files of 64 KiB, a ~250-byte record each request
    args = _config(tmp_path, "rot", base, 1.0, logs, max_mb)
    with ServerProcess(args) as srv:
        srv.wait_until_available("rot")
        with requests.Session() as s:
            for i in range(2000):
                assert s.post(f"{srv.rest_url}/v1/models/rot:predict",
                              json={"instances": [[float(i)] * 1]}, timeout=30).ok
        wait_until(lambda: _metric(srv, "tfso_prediction_log_records_total", model="rot")
                   + _metric(srv, "tfso_prediction_log_dropped_total", model="rot",
                             reason="queue_full") >= 2000,
                   timeout_s=30, what="every sample written or dropped")
        files = sorted(glob.glob(f"{logs}/rot-*.tfrecord"))
        assert len(files) >= 2
        total = sum(Path(f).stat().st_size for f in files)
        assert total <= max_mb * 1024 * 1024
        newest = _records(logs / "rot")[-1]
        assert from_tensor_proto(newest.predict_log.request.inputs["x"]).tolist() == [[1999.0]]


def test_unwritable_folder_keeps_serving(tmp_path: Path) -> None:
    base = export_half_plus_two_tf1(tmp_path / "m", versions=(1,))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = _config(tmp_path, "ro", base, 1.0, blocker / "logs", 64)
    with ServerProcess(args) as srv:
        srv.wait_until_available("ro")
        for i in range(50):
            r = _predict(srv, "ro", float(i), f"ro-{i}")
            assert r.status_code == 200 and r.json() == {"predictions": [[0.5 * i + 2.0]]}
        wait_until(lambda: _metric(srv, "tfso_prediction_log_dropped_total", model="ro",
                                   reason="write_error") == 50,
                   timeout_s=30, what="50 samples counted as write errors")
        assert _metric(srv, "tfso_prediction_log_writable", model="ro") == 0
        warnings = [ln for ln in srv.logs().splitlines() if "cannot be written" in ln]
        assert len(warnings) == 1, warnings  # one warning per failure streak, not per request


class _FileSizeLimited(ServerProcess):
    """Every file the server writes is capped at 256 KiB (RLIMIT_FSIZE): a disk that fills up."""

    def start(self) -> ServerProcess:
        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

        with open(self._log_path, "wb") as log:
            self.proc = subprocess.Popen(SERVER_CMD + self.args, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         preexec_fn=cap)
        return self


def test_full_disk_keeps_serving(tmp_path: Path) -> None:
    base = export_half_plus_two_tf1(tmp_path / "m", versions=(1,))
    logs = tmp_path / "logs"
    args = _config(tmp_path, "full", base, 1.0, logs, 64)  # 16 MiB files: the limit hits first
    with _FileSizeLimited(args) as srv:
        srv.wait_until_available("full")
        big = np.arange(2000, dtype=np.float32).reshape(-1, 1).tolist()

        def send(_: int) -> int:
            return requests.post(f"{srv.rest_url}/v1/models/full:predict",
                                 json={"instances": big}, timeout=30).status_code

        # ~16 KiB per record: the file hits 256 KiB after ~15. Eight clients at once, so the
        # writer gathers more than fits into one write(), which the full disk cuts short.
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(send, range(60))) == {200}
        wait_until(lambda: _metric(srv, "tfso_prediction_log_dropped_total", model="full",
                                   reason="write_error") > 0,
                   timeout_s=30, what="write errors counted")
        assert any("cannot be written" in ln for ln in srv.logs().splitlines())
        assert _predict(srv, "full", 2.0, "after-full").json() == {"predictions": [[3.0]]}
        wait_until(lambda: _metric(srv, "tfso_prediction_log_records_total", model="full")
                   + _metric(srv, "tfso_prediction_log_dropped_total", model="full",
                             reason="write_error") == 61,
                   timeout_s=30, what="all 61 samples written or dropped")
        written = _metric(srv, "tfso_prediction_log_records_total", model="full")
    # A write cut short by the limit is cut back to the last whole record: every file parses to
    # its end with TF's reader (a half record would raise DataLossError), checksums included.
    # The records of a write that fitted before the disk filled are kept, and counted as written.
    records = _records(logs / "full")
    assert records and all(r.log_metadata.model_spec.name == "full" for r in records)
    assert len(records) == written
    # Each file a write outgrew holds every whole record that fitted: it is full to within one.
    record = max(len(r.SerializeToString()) for r in records) + 16  # TFRecord framing
    files = sorted(glob.glob(f"{logs}/full-*.tfrecord"))
    assert all(Path(f).stat().st_size > 256 * 1024 - record for f in files[:-1])
    assert len(files) >= 2
