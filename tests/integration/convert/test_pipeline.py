"""Every format converted from a real SavedModel, run by its own runtime, and compared with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator.convert import (
    ConvertError,
    Thresholds,
    VerificationError,
    convert_version,
    load_samples,
    raise_for_reports,
    read_signature,
)
from orchestrator.convert.report import REPORT_NAME, Report
from tests.integration.convert.conftest import need_module, need_node_packages

pytestmark = pytest.mark.integration

# Bounds on max abs diff for softmax outputs in [0, 1]: float formats are exact to float32
# rounding; quantized weights or activations move outputs by a few quantization steps.
MAX_DIFF = {
    "tflite": 1e-5,
    "tflite-dynamic": 2e-2,
    "tflite-int8": 5e-2,
    "onnx": 1e-5,
    "tfjs": 1e-5,
    "tfjs-f16": 5e-3,
    "tfjs-uint8": 5e-2,
}
ARTIFACT = {
    "tflite": "model.tflite",
    "tflite-dynamic": "model.tflite",
    "tflite-int8": "model.tflite",
    "onnx": "model.onnx",
    "tfjs": "model.json",
    "tfjs-f16": "model.json",
    "tfjs-uint8": "model.json",
}


@pytest.fixture(scope="module")
def converted(version_dir: Path, samples_npz: Path, tmp_path_factory: pytest.TempPathFactory):
    for module in ("tf2onnx", "onnxruntime", "ai_edge_litert", "tensorflowjs"):
        need_module(module)
    need_node_packages()
    out_root = tmp_path_factory.mktemp("exports")
    samples = load_samples(samples_npz, read_signature(version_dir))
    events: list[tuple[str, str]] = []
    reports = convert_version(
        version_dir,
        model="x",
        version=1,
        formats=list(MAX_DIFF),
        out_root=out_root,
        samples=samples,
        latency_runs=5,
        on_event=lambda fmt, msg: events.append((fmt, msg)),
    )
    return {r.format: r for r in reports}, out_root, events


def test_every_format_converts_and_passes(converted: tuple[dict[str, Report], Path, list]) -> None:
    reports, _, _ = converted
    failed = {f: r.error for f, r in reports.items() if r.status != "ok"}
    assert not failed
    raise_for_reports(list(reports.values()))  # nothing to raise


@pytest.mark.parametrize("fmt", list(MAX_DIFF))
def test_artifact_matches_savedmodel(fmt: str, converted: tuple[dict[str, Report], Path, list]) -> None:
    report = converted[0][fmt]
    assert report.max_abs_diff is not None and report.max_abs_diff <= MAX_DIFF[fmt]
    assert report.top1_output == "output_0"
    assert report.top1_agreement is not None
    # Float formats agree everywhere; quantized ones may flip a near-tie, but rarely.
    assert report.top1_agreement >= (1.0 if MAX_DIFF[fmt] <= 1e-5 else 0.9)
    assert report.samples == {"source": report.samples["source"], "count": 64}
    assert report.samples["source"].startswith("file:")
    assert report.latency_ms["artifact"] is not None and report.latency_ms["artifact"] > 0
    assert report.latency_ms["savedmodel"] is not None
    assert report.runtime and report.converter


@pytest.mark.parametrize("fmt", list(MAX_DIFF))
def test_report_json_beside_the_artifact(fmt: str, converted: tuple[dict[str, Report], Path, list]) -> None:
    _, out_root, _ = converted
    folder = out_root / "x" / "1" / fmt
    artifact = folder / ARTIFACT[fmt]
    assert artifact.is_file()
    data = json.loads((folder / REPORT_NAME).read_text())
    assert data["format"] == fmt
    assert data["passed"] is True
    assert data["size_bytes"] > 0
    assert data["savedmodel_size_bytes"] > data["size_bytes"]
    assert set(data["outputs"]) == {"output_0"}


def test_runtimes_are_the_formats_own(converted: tuple[dict[str, Report], Path, list]) -> None:
    reports = converted[0]
    assert reports["tflite"].runtime.startswith("ai-edge-litert ")
    assert reports["tflite-int8"].runtime.startswith("ai-edge-litert ")
    assert reports["onnx"].runtime.startswith("onnxruntime ")
    assert reports["tfjs"].runtime.startswith("@tensorflow/tfjs 4.22.0")
    assert reports["onnx"].converter.startswith("tf2onnx 1.17")


def test_int8_model_takes_and_gives_int8(converted: tuple[dict[str, Report], Path, list]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    _, out_root, _ = converted
    interpreter = Interpreter(model_path=str(out_root / "x" / "1" / "tflite-int8" / "model.tflite"))
    runner = interpreter.get_signature_runner("serving_default")
    assert runner.get_input_details()["x"]["dtype"] == np.int8
    assert runner.get_output_details()["output_0"]["dtype"] == np.int8


def test_onnx_opset_is_the_default(converted: tuple[dict[str, Report], Path, list]) -> None:
    import onnx

    _, out_root, _ = converted
    model = onnx.load(str(out_root / "x" / "1" / "onnx" / "model.onnx"))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}


def test_progress_events_name_each_format(converted: tuple[dict[str, Report], Path, list]) -> None:
    events = converted[2]
    assert ("tflite", "converting") in events
    assert ("tfjs-uint8", "ok") in events


def test_thresholds_turn_drift_into_a_verification_error(
    version_dir: Path, samples_npz: Path, tmp_path: Path
) -> None:
    need_module("ai_edge_litert")
    samples = load_samples(samples_npz, read_signature(version_dir))
    reports = convert_version(
        version_dir, model="x", version=1, formats=["tflite-int8"], out_root=tmp_path,
        samples=samples, thresholds=Thresholds(max_abs_diff=1e-9), latency_runs=1,
    )
    assert reports[0].status == "drift"
    assert "max abs diff" in reports[0].failures[0]
    assert json.loads((tmp_path / "x/1/tflite-int8/report.json").read_text())["passed"] is False
    with pytest.raises(VerificationError) as info:
        raise_for_reports(reports)
    assert info.value.exit_code == 9


def test_synthetic_samples_are_flagged(version_dir: Path, tmp_path: Path) -> None:
    need_module("ai_edge_litert")
    reports = convert_version(version_dir, model="x", version=1, formats=["tflite"],
                              out_root=tmp_path, latency_runs=1)
    assert reports[0].samples == {"source": "synthetic", "count": 32}
    assert any("NO SAMPLES GIVEN" in w for w in reports[0].warnings)


def test_max_samples_caps_what_is_used(version_dir: Path, samples_npz: Path, tmp_path: Path) -> None:
    need_module("ai_edge_litert")
    samples = load_samples(samples_npz, read_signature(version_dir))
    report = convert_version(version_dir, model="x", version=1, formats=["tflite"], out_root=tmp_path,
                             samples=samples, max_samples=10, latency_runs=1)[0]
    assert report.samples["count"] == 10
    assert report.warnings == ["using the first 10 of 64 samples (--max-samples)"]


def test_a_failing_format_does_not_stop_the_others(version_dir: Path, tmp_path: Path) -> None:
    need_module("ai_edge_litert")
    reports = convert_version(version_dir, model="x", version=1, formats=["tftrt", "tflite"],
                              out_root=tmp_path, latency_runs=1)
    assert [r.status for r in reports] == ["error", "ok"]
    assert "is_tensorrt_build" in reports[0].error
    assert (tmp_path / "x/1/tftrt/report.json").is_file()
    with pytest.raises(ConvertError) as info:
        raise_for_reports(reports)
    assert "NVIDIA" in str(info.value)


# -- each artifact run here, in its own runtime, against the SavedModel run here -----------------
NODE_RUNNER = r"""
'use strict';
console.log = (...a) => process.stderr.write(a.join(' ') + '\n');
console.warn = console.log;
const fs = require('fs'), path = require('path');
const tf = require('@tensorflow/tfjs');
const req = JSON.parse(fs.readFileSync(0, 'utf8'));
const mj = JSON.parse(fs.readFileSync(path.join(req.dir, 'model.json'), 'utf8'));
const specs = [], bufs = [];
for (const g of mj.weightsManifest) {
  specs.push(...g.weights);
  for (const p of g.paths) bufs.push(fs.readFileSync(path.join(req.dir, p)));
}
const all = Buffer.concat(bufs);
(async () => {
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: mj.modelTopology, weightSpecs: specs, signature: mj.signature,
    weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength)}));
  const x = tf.tensor(req.data, req.shape, 'float32');
  let y;
  try { y = model.execute({x}); } catch (e) { y = await model.executeAsync({x}); }
  if (Array.isArray(y)) y = y[0];
  process.stdout.write(JSON.stringify({shape: y.shape, data: Array.from(await y.data())}));
})();
"""


def run_artifact(fmt: str, artifact: Path, x: np.ndarray, tmp_path: Path) -> np.ndarray:
    """The artifact's output for x, from its own runtime, called directly (not through our code)."""
    if fmt.startswith("tflite"):
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(artifact)).get_signature_runner("serving_default")
        detail_in = runner.get_input_details()["x"]
        detail_out = runner.get_output_details()["output_0"]
        feed = x
        if detail_in["dtype"] == np.int8:
            scale, zero = detail_in["quantization"]
            feed = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        out = runner(x=feed)["output_0"]
        if detail_out["dtype"] == np.int8:
            scale, zero = detail_out["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return np.asarray(out, np.float32)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    import os
    import subprocess

    from orchestrator.convert.node import find_node, node_modules_dir

    script = tmp_path / "run_tfjs.cjs"
    script.write_text(NODE_RUNNER)
    done = subprocess.run([find_node() or "node", str(script)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "NODE_PATH": str(node_modules_dir())},
                          input=json.dumps({"dir": str(artifact.parent), "shape": list(x.shape),
                                            "data": x.ravel().tolist()}))
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    return np.asarray(answer["data"], np.float32).reshape(answer["shape"])


@pytest.mark.parametrize("fmt", list(MAX_DIFF))
def test_artifact_run_here_matches_the_savedmodel_run_here(
    fmt: str, converted: tuple[dict[str, Report], Path, list], samples_array: np.ndarray,
    reference_outputs: np.ndarray, tmp_path: Path,
) -> None:
    """Nothing from report.json decides this: the artifact runs in its own runtime here and the
    SavedModel in TensorFlow here. The report must then agree with what was measured, so a bug
    that ran the SavedModel in place of the artifact (and reported ~0 drift) fails too."""
    reports, out_root, _ = converted
    artifact = out_root / "x" / "1" / fmt / ARTIFACT[fmt]
    got = run_artifact(fmt, artifact, samples_array, tmp_path)
    assert got.shape == reference_outputs.shape
    diff = float(np.max(np.abs(got - reference_outputs)))
    assert diff <= MAX_DIFF[fmt], (fmt, diff)
    top1 = float(np.mean(got.argmax(axis=1) == reference_outputs.argmax(axis=1)))
    assert top1 >= (1.0 if MAX_DIFF[fmt] <= 1e-5 else 0.9), (fmt, top1)
    report = reports[fmt]
    assert report.max_abs_diff == pytest.approx(diff, abs=1e-6), (fmt, report.max_abs_diff, diff)
