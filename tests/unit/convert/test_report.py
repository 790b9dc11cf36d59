from __future__ import annotations

import json
from pathlib import Path

from orchestrator.convert.report import REPORT_NAME, Report, artifact_size, human_size, table_row


def test_size_of_a_file_and_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"x" * 5)
    (tmp_path / REPORT_NAME).write_text("{}" * 100)
    assert artifact_size(tmp_path / "a.bin") == 10
    assert artifact_size(tmp_path) == 15  # our own report.json is not the artifact


def test_human_size() -> None:
    assert human_size(None) == "-"
    assert human_size(512) == "512 B"
    assert human_size(2048) == "2.0 KiB"
    assert human_size(3 * 1024**3) == "3.0 GiB"


def test_write_and_table_row(tmp_path: Path) -> None:
    report = Report(model="x", version=1, format="onnx", status="ok", size_bytes=1000,
                    savedmodel_size_bytes=4000, max_abs_diff=5.96e-8, top1_agreement=1.0,
                    latency_ms={"artifact": 0.0123, "savedmodel": 0.3})
    path = report.write(tmp_path / "onnx")
    data = json.loads(path.read_text())
    assert data["passed"] is True and data["format"] == "onnx"
    assert table_row(report) == ["onnx", "ok", "1000 B", "0.25x", "5.96e-08", "100.00%",
                                 "0.012", "0.300"]
    failed = Report(model="x", version=1, format="tftrt", status="error", error="no TensorRT")
    assert not failed.passed
    assert table_row(failed)[1:] == ["error", "-", "-", "-", "-", "-", "-"]
