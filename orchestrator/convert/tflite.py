"""TFLite: float, dynamic-range (Optimize.DEFAULT) and full-integer INT8 models, run with LiteRT.

The artifact is checked with `ai-edge-litert`'s interpreter, the runtime phones and edge devices
use; `tf.lite.Interpreter` is deprecated and not used. INT8 models take and give int8 tensors:
the runner quantizes inputs and dequantizes outputs with each tensor's own scale and zero point,
as an app on a device does.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.convert.base import (
    DEFAULT_LATENCY_RUNS,
    Arrays,
    ConvertJob,
    RunResult,
    median_latency_ms,
    package_version,
)
from orchestrator.convert.errors import ConvertError
from orchestrator.convert.samples import Samples

ARTIFACT_NAME = "model.tflite"
MODES = ("float", "dynamic", "int8")
LITERT_FIX = "install the conversion tools: scripts/install_convert_deps.sh (pip: ai-edge-litert)"


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """Real values -> integer tensor, as TFLite defines it: q = round(x / scale) + zero_point."""
    info = np.iinfo(dtype)
    q = np.round(values.astype(np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((values.astype(np.float64) - zero_point) * scale).astype(np.float32)


@dataclass(frozen=True)
class TFLiteFormat:
    name: str
    mode: str  # one of MODES

    @property
    def tool(self) -> str:
        return f"tensorflow {package_version('tensorflow')} TFLiteConverter"

    def convert(self, job: ConvertJob) -> Path:
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(job.saved_model_dir), signature_keys=[job.signature_key]
        )
        if self.mode in ("dynamic", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if self.mode == "int8":
            samples = job.samples

            def representative_dataset() -> Any:
                for i in range(samples.count):
                    yield samples.example(i)

            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        try:
            with warnings.catch_warnings():
                # Calibration runs TF's own (deprecated) interpreter inside the converter.
                warnings.simplefilter("ignore", UserWarning)
                flatbuffer = converter.convert()
        except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError
            fix = (
                "some ops have no integer kernel: try tflite-dynamic, or check the samples"
                if self.mode == "int8"
                else "see the converter's message; models with unsupported ops need SELECT_TF_OPS"
            )
            raise ConvertError(
                f"TFLite conversion failed: {type(exc).__name__}: {str(exc).strip()[:2000]}",
                format=self.name,
                fix=fix,
            ) from exc
        artifact = job.out_dir / ARTIFACT_NAME
        artifact.write_bytes(flatbuffer)
        return artifact

    def runner(self, artifact: Path, job: ConvertJob) -> LiteRTRunner:
        return LiteRTRunner(artifact, job.signature_key, fmt=self.name)


class LiteRTRunner:
    """Runs one signature of a .tflite file with ai-edge-litert's interpreter."""

    def __init__(self, artifact: Path, signature_key: str, *, fmt: str = "tflite") -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ConvertError("ai-edge-litert is not installed", format=fmt, fix=LITERT_FIX) from exc
        self._interpreter = Interpreter(model_path=str(artifact))
        signatures = self._interpreter.get_signature_list()
        key = signature_key if signature_key in signatures else next(iter(signatures), None)
        if key is None:
            raise ConvertError(f"{artifact} has no signature to run", format=fmt)
        self._runner = self._interpreter.get_signature_runner(key)
        self._inputs = self._runner.get_input_details()
        self._outputs = self._runner.get_output_details()
        self.runtime = f"ai-edge-litert {package_version('ai-edge-litert')}"

    def _feed(self, inputs: Arrays) -> Arrays:
        feed = {}
        for name, array in inputs.items():
            detail = self._inputs[name]
            dtype = detail["dtype"]
            scale, zero_point = detail["quantization"]
            if scale and np.issubdtype(dtype, np.integer) and array.dtype.kind == "f":
                feed[name] = quantize(array, scale, zero_point, dtype)
            else:
                feed[name] = array.astype(dtype, copy=False)
        return feed

    def predict(self, inputs: Arrays) -> Arrays:
        raw = self._runner(**self._feed(inputs))
        out = {}
        for name, value in raw.items():
            scale, zero_point = self._outputs[name]["quantization"]
            out[name] = dequantize(value, scale, zero_point) if scale else np.asarray(value)
        return out

    def run(self, samples: Samples, latency_runs: int = DEFAULT_LATENCY_RUNS) -> RunResult:
        outputs = self.predict(samples.arrays)
        return RunResult(outputs, median_latency_ms(self.predict, samples, latency_runs), self.runtime)


__all__ = ["MODES", "LiteRTRunner", "TFLiteFormat", "dequantize", "quantize"]
