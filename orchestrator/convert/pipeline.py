"""Convert one SavedModel version into each asked format and check every artifact against it.

    exports/<model>/<version>/<format>/   the artifact (model.tflite, model.onnx, model.json + shards,
                                          or a SavedModel for tftrt) and report.json beside it

The SavedModel is run once on the samples (the reference); each artifact is then run by its own
runtime on the same samples and compared. A format that fails is reported and the others go on;
`raise_for_reports` turns the reports into the command's outcome.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.convert.base import DEFAULT_LATENCY_RUNS, ConvertJob, Format, SavedModelRunner
from orchestrator.convert.errors import ConvertError, VerificationError
from orchestrator.convert.onnx import OnnxFormat
from orchestrator.convert.report import Report, artifact_size
from orchestrator.convert.samples import (
    DEFAULT_SIGNATURE,
    SYNTHETIC_WARNING,
    Samples,
    read_signature,
    synthetic_samples,
)
from orchestrator.convert.tfjs import TfjsFormat
from orchestrator.convert.tflite import TFLiteFormat
from orchestrator.convert.tftrt import TftrtFormat
from orchestrator.convert.verify import Thresholds, compare_outputs

FORMATS: dict[str, Format] = {
    "tflite": TFLiteFormat("tflite", "float"),
    "tflite-dynamic": TFLiteFormat("tflite-dynamic", "dynamic"),
    "tflite-int8": TFLiteFormat("tflite-int8", "int8"),
    "onnx": OnnxFormat(),
    "tfjs": TfjsFormat("tfjs"),
    "tfjs-f16": TfjsFormat("tfjs-f16"),
    "tfjs-uint8": TfjsFormat("tfjs-uint8"),
    "tftrt": TftrtFormat("tftrt"),
    "tftrt-fp16": TftrtFormat("tftrt-fp16"),
}

DEFAULT_MAX_SAMPLES = 512  # what verification and INT8 calibration use at most
Event = Callable[[str, str], None]  # (format, message) for progress lines


def parse_formats(text: str | Sequence[str]) -> list[str]:
    """`tflite,onnx` (or repeated options) -> known format names, in order, without repeats."""
    parts = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    names: list[str] = []
    for raw in parts:
        name = raw.strip().lower()
        if not name:
            continue
        if name not in FORMATS:
            raise ConvertError(
                f"unknown format {name!r}",
                fix=f"pick from: {', '.join(FORMATS)}",
            )
        if name not in names:
            names.append(name)
    if not names:
        raise ConvertError("no format given", fix=f"pass --to with any of: {', '.join(FORMATS)}")
    return names


def export_dir(out_root: Path, model: str, version: int) -> Path:
    return Path(out_root) / model / str(version)


def convert_version(
    saved_model_dir: Path,
    *,
    model: str,
    version: int,
    formats: Sequence[str],
    out_root: Path = Path("exports"),
    samples: Samples | None = None,
    signature_key: str = DEFAULT_SIGNATURE,
    options: Mapping[str, Any] | None = None,
    thresholds: Thresholds | None = None,
    latency_runs: int = DEFAULT_LATENCY_RUNS,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    registry: Mapping[str, Format] | None = None,
    on_event: Event | None = None,
) -> list[Report]:
    """Convert, run and compare every format; write each report.json; return the reports."""
    registry = FORMATS if registry is None else registry
    thresholds = thresholds or Thresholds()
    say = on_event or (lambda _fmt, _msg: None)
    saved_model_dir = Path(saved_model_dir)
    signature = read_signature(saved_model_dir, signature_key)
    warnings: list[str] = []
    if samples is None:
        samples = synthetic_samples(signature)
        warnings.append(SYNTHETIC_WARNING)
    elif samples.count > max_samples:
        warnings.append(f"using the first {max_samples} of {samples.count} samples (--max-samples)")
        samples = samples.head(max_samples)
    say("savedmodel", f"running the SavedModel on {samples.count} samples ({samples.source})")
    reference = SavedModelRunner(saved_model_dir, signature_key).run(samples, latency_runs)
    base = export_dir(out_root, model, version)
    reports = []
    for name in formats:
        fmt = registry[name]
        out_dir = base / name
        report = Report(
            model=model,
            version=version,
            format=name,
            status="error",
            savedmodel_size_bytes=artifact_size(saved_model_dir),
            signature=signature_key,
            samples={"source": samples.source, "count": samples.count},
            converter=fmt.tool,
            thresholds={"max_abs_diff": thresholds.max_abs_diff,
                        "min_agreement": thresholds.min_agreement},
            warnings=list(warnings),
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        job = ConvertJob(saved_model_dir, signature_key, signature, out_dir, samples, dict(options or {}))
        started = time.monotonic()
        try:
            say(name, "converting")
            artifact = fmt.convert(job)
            report.convert_seconds = round(time.monotonic() - started, 3)
            report.artifact = str(artifact)
            report.size_bytes = artifact_size(artifact)
            say(name, "running the artifact on the samples")
            result = fmt.runner(artifact, job).run(samples, latency_runs)
            comparison = compare_outputs(reference.outputs, result.outputs)
        except ConvertError as exc:
            report.error = exc.message + (f"\n{exc.logs.rstrip()}" if exc.logs else "")
            report.fix = exc.fix
        except Exception as exc:  # a tool's unexpected failure must not hide the other formats
            report.error = f"{type(exc).__name__}: {exc}"
        else:
            report.runtime = result.runtime
            report.max_abs_diff = comparison.max_abs_diff
            report.top1_agreement = comparison.top1_agreement
            report.top1_output = comparison.top1_output
            report.outputs = {
                k: {"max_abs_diff": d.max_abs_diff, "mean_abs_diff": d.mean_abs_diff,
                    "top1_agreement": d.top1_agreement}
                for k, d in comparison.outputs.items()
            }
            report.latency_ms = {
                "artifact": result.latency_ms,
                "savedmodel": reference.latency_ms,
                "runs": min(latency_runs, samples.count),
                "how": "median of single-example calls after one warm-up",
            }
            report.failures = thresholds.failures(comparison)
            report.status = "drift" if report.failures else "ok"
        report.write(out_dir)
        say(name, f"error: {_with_format(name, report.error)}" if report.error else report.status)
        reports.append(report)
    return reports


def _with_format(fmt: str, message: str | None) -> str:
    first = (message or "").splitlines()[0] if message else "failed"
    return first if first.startswith(f"{fmt}:") else f"{fmt}: {first}"


def raise_for_reports(reports: Sequence[Report]) -> None:
    """ConvertError if a format failed; VerificationError if an artifact drifted too far."""
    errors = [r for r in reports if r.status == "error"]
    if errors:
        details = "\n".join(
            f"  {_with_format(r.format, r.error)}" + (f"\n    fix: {r.fix}" if r.fix else "")
            for r in errors
        )
        raise ConvertError(
            f"{len(errors)} of {len(reports)} formats failed:\n{details}",
            fix="see each format's fix above; the other formats' artifacts and reports are written",
        )
    drifted = [r for r in reports if r.status == "drift"]
    if drifted:
        details = "\n".join(f"  {r.format}: {'; '.join(r.failures)}" for r in drifted)
        raise VerificationError(
            f"{len(drifted)} artifacts answer too unlike the SavedModel:\n{details}",
            fix="loosen --max-abs-diff/--min-agreement, give representative --samples, or pick a "
            "less aggressive format (e.g. tflite-dynamic instead of tflite-int8)",
        )


__all__ = ["FORMATS", "convert_version", "export_dir", "parse_formats", "raise_for_reports"]
