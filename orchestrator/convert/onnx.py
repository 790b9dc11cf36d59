"""ONNX: tf2onnx converts the SavedModel (not the Keras object: `from_keras` fails on Keras 3),
and onnxruntime runs the result.

tf2onnx runs as its own process (`python -m tf2onnx.convert`): it is its documented entry point,
and it resets TensorFlow's default graph, which we keep out of the calling process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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

ARTIFACT_NAME = "model.onnx"
DEFAULT_OPSET = 17
MIN_OPSET = 13
MAX_OPSET = 18  # the highest tf2onnx 1.17 emits
CONVERT_TIMEOUT_S = 900.0
DEPS_FIX = "install the conversion tools: scripts/install_convert_deps.sh (pip: tf2onnx, onnxruntime)"


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConvertError(
            f"ONNX opset {opset} is out of range",
            format="onnx",
            fix=f"pick an opset from {MIN_OPSET} to {MAX_OPSET} (tf2onnx 1.17's maximum); "
            f"default {DEFAULT_OPSET}",
        )
    return opset


def tf2onnx_command(saved_model_dir: Path, signature_key: str, opset: int, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tf2onnx.convert",
        "--saved-model",
        str(saved_model_dir),
        "--tag",
        "serve",
        "--signature_def",
        signature_key,
        "--opset",
        str(check_opset(opset)),
        "--output",
        str(output),
    ]


@dataclass(frozen=True)
class OnnxFormat:
    name: str = "onnx"

    @property
    def tool(self) -> str:
        return f"tf2onnx {package_version('tf2onnx')}"

    def convert(self, job: ConvertJob) -> Path:
        artifact = job.out_dir / ARTIFACT_NAME
        opset = int(job.options.get("opset", DEFAULT_OPSET))
        command = tf2onnx_command(job.saved_model_dir, job.signature_key, opset, artifact)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=env,
                timeout=CONVERT_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ConvertError(
                f"tf2onnx did not finish within {CONVERT_TIMEOUT_S:.0f} s",
                format=self.name,
                fix="a very large graph: try --opset 17 and check free memory",
            ) from exc
        logs = (done.stdout or "") + (done.stderr or "")
        if done.returncode != 0 or not artifact.is_file():
            if "No module named tf2onnx" in logs:
                raise ConvertError("tf2onnx is not installed", format=self.name, fix=DEPS_FIX)
            raise ConvertError(
                f"tf2onnx failed (exit {done.returncode})",
                format=self.name,
                fix="read tf2onnx's last lines below; unsupported ops are named there",
                logs=logs,
            )
        return artifact

    def runner(self, artifact: Path, job: ConvertJob) -> OnnxRunner:
        return OnnxRunner(artifact, list(job.signature.inputs), list(job.signature.outputs))


def _match_names(wanted: list[str], found: list[str]) -> dict[str, str]:
    """Map signature names to the graph's names: same name, same name without `:0`, else order."""
    stripped = {f.split(":")[0]: f for f in found}
    if all(w in found or w in stripped for w in wanted):
        return {w: (w if w in found else stripped[w]) for w in wanted}
    if len(wanted) == len(found):
        return dict(zip(wanted, found, strict=True))
    raise ConvertError(
        f"cannot match signature names {wanted} to the ONNX graph's {found}", format="onnx"
    )


class OnnxRunner:
    """Runs a .onnx file with onnxruntime's CPU provider."""

    def __init__(self, artifact: Path, input_names: list[str], output_names: list[str]) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ConvertError("onnxruntime is not installed", format="onnx", fix=DEPS_FIX) from exc
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(artifact), sess_options=options, providers=["CPUExecutionProvider"]
        )
        graph_inputs = self._session.get_inputs()
        self._types = {i.name: i.type for i in graph_inputs}
        self._inputs = _match_names(input_names, [i.name for i in graph_inputs])
        self._outputs = _match_names(output_names, [o.name for o in self._session.get_outputs()])
        self.runtime = f"onnxruntime {ort.__version__}"

    def predict(self, inputs: Arrays) -> Arrays:
        feed = {self._inputs[k]: v for k, v in inputs.items()}
        names = list(self._outputs.values())
        values = self._session.run(names, feed)
        return {k: np.asarray(v) for k, v in zip(self._outputs, values, strict=True)}

    def run(self, samples: Samples, latency_runs: int = DEFAULT_LATENCY_RUNS) -> RunResult:
        outputs = self.predict(samples.arrays)
        return RunResult(outputs, median_latency_ms(self.predict, samples, latency_runs), self.runtime)


__all__ = ["DEFAULT_OPSET", "MAX_OPSET", "MIN_OPSET", "OnnxFormat", "OnnxRunner", "tf2onnx_command"]
