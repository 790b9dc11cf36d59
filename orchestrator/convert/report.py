"""The record of one conversion: what was made, how big, how close to the SavedModel, how fast.

Written as `report.json` beside the artifact (in the format's folder) and shown as a table row.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPORT_NAME = "report.json"


def artifact_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (our own report.json excluded)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            if Path(root) == path and name == REPORT_NAME:
                continue
            total += (Path(root) / name).stat().st_size
    return total


@dataclass
class Report:
    model: str
    version: int
    format: str
    status: str  # "ok", "drift" (thresholds failed) or "error"
    artifact: str | None = None
    size_bytes: int | None = None
    savedmodel_size_bytes: int | None = None
    signature: str = "serving_default"
    samples: dict[str, Any] = field(default_factory=dict)
    converter: str | None = None
    runtime: str | None = None
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    top1_output: str | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency_ms: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float | None] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    fix: str | None = None
    convert_seconds: float | None = None

    @property
    def passed(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / REPORT_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


TABLE_COLUMNS = ("format", "status", "size", "x SM", "max|diff|", "top-1 agree", "ms", "ms SM")


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def table_row(report: Report) -> list[str]:
    ratio = (
        f"{report.size_bytes / report.savedmodel_size_bytes:.2f}x"
        if report.size_bytes and report.savedmodel_size_bytes
        else "-"
    )
    art = report.latency_ms.get("artifact")
    ref = report.latency_ms.get("savedmodel")
    return [
        report.format,
        report.status,
        human_size(report.size_bytes),
        ratio,
        "-" if report.max_abs_diff is None else f"{report.max_abs_diff:.3g}",
        "-" if report.top1_agreement is None else f"{report.top1_agreement:.2%}",
        "-" if art is None else f"{art:.3f}",
        "-" if ref is None else f"{ref:.3f}",
    ]


__all__ = ["REPORT_NAME", "TABLE_COLUMNS", "Report", "artifact_size", "human_size", "table_row"]
