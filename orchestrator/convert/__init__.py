"""Model packaging: TFLite (+INT8), ONNX, TF.js and TF-TRT exports, each checked against the
SavedModel it came from, and TF Serving warmup records.

Heavy libraries (TensorFlow, converters, runtimes) load inside the functions that use them.
"""

from orchestrator.convert.errors import ConvertError, VerificationError
from orchestrator.convert.pipeline import (
    FORMATS,
    convert_version,
    export_dir,
    parse_formats,
    raise_for_reports,
)
from orchestrator.convert.report import Report
from orchestrator.convert.samples import Samples, load_samples, read_signature, synthetic_samples
from orchestrator.convert.verify import Thresholds, compare_outputs

__all__ = [
    "FORMATS",
    "ConvertError",
    "Report",
    "Samples",
    "Thresholds",
    "VerificationError",
    "compare_outputs",
    "convert_version",
    "export_dir",
    "load_samples",
    "parse_formats",
    "raise_for_reports",
    "read_signature",
    "synthetic_samples",
]
