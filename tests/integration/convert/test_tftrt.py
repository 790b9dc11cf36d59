"""TF-TRT: the clear error on PyPI's TensorFlow, and the conversion's arguments through a fake
trt_convert module (the real one needs an NVIDIA build of TensorFlow and a GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.convert import ConvertError, convert_version, load_samples, read_signature
from orchestrator.convert.tftrt import TftrtFormat, tensorrt_build_info

pytestmark = pytest.mark.integration


def save_uniform_engine(out: str) -> None:
    """What the fake "engine" saves: not the source model but one answering 1/3 for every class,
    so the drift the report shows proves the saved artifact is what was run and compared."""
    import tensorflow as tf

    class Uniform(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"output_0": tf.zeros([tf.shape(x)[0], 3]) + 1.0 / 3.0}

    module = Uniform()
    tf.saved_model.save(module, out, signatures={"serving_default": module.serve})


class FakeTrt:
    """Stands in for tensorflow.python.compiler.tensorrt.trt_convert and records the calls
    (TensorRT needs an NVIDIA build of TensorFlow and a GPU, neither of which exists here)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        fake = self

        class Converter:
            def __init__(self, **kwargs: Any) -> None:
                fake.calls.append(("init", kwargs))
                self.source = kwargs["input_saved_model_dir"]

            def convert(self) -> None:
                fake.calls.append(("convert", None))

            def build(self, input_fn: Any) -> None:
                fake.calls.append(("build", list(input_fn())))

            def save(self, out: str) -> None:
                fake.calls.append(("save", out))
                save_uniform_engine(out)

        self.TrtGraphConverterV2 = Converter

    def TrtConversionParams(self, **kwargs: Any) -> dict[str, Any]:  # mirrors TF
        self.calls.append(("params", kwargs))
        return {"params": kwargs}


def test_pypi_tensorflow_is_not_a_tensorrt_build() -> None:
    info = tensorrt_build_info()
    assert info["is_tensorrt_build"] is False


def test_plain_tensorflow_gets_a_clear_error(version_dir: Path, tmp_path: Path) -> None:
    reports = convert_version(version_dir, model="x", version=1, formats=["tftrt"],
                              out_root=tmp_path, latency_runs=1)
    report = reports[0]
    assert report.status == "error"
    assert "built without TensorRT" in report.error
    assert 'is_tensorrt_build"] is False' in report.error
    assert "NVIDIA" in report.fix and "onnx" in report.fix


@pytest.mark.parametrize(("fmt", "options", "precision"), [
    ("tftrt", {}, "FP32"),
    ("tftrt-fp16", {}, "FP16"),
    ("tftrt", {"trt_precision": "fp16", "trt_workspace_bytes": 1 << 20, "trt_min_segment_size": 5}, "FP16"),
])
def test_arguments_reach_trt_convert(
    fmt: str, options: dict[str, Any], precision: str, version_dir: Path, samples_npz: Path,
    tmp_path: Path, reference_outputs: Any,
) -> None:
    fake = FakeTrt()
    registry = {fmt: TftrtFormat(fmt, build_info={"is_tensorrt_build": True}, trt_module=fake)}
    samples = load_samples(samples_npz, read_signature(version_dir))
    reports = convert_version(version_dir, model="x", version=1, formats=[fmt], out_root=tmp_path,
                              samples=samples, options=options, registry=registry, latency_runs=1)
    # The saved "engine" answers 1/3 everywhere: the report's drift is that of the artifact
    # against the SavedModel, both run here independently.
    expected = float(np.max(np.abs(reference_outputs - 1.0 / 3.0)))
    assert expected > 0.01
    assert reports[0].max_abs_diff == pytest.approx(expected, abs=1e-6)
    names = [name for name, _ in fake.calls]
    assert names == ["params", "init", "convert", "build", "save"]
    params = dict(fake.calls[0][1])
    assert params["precision_mode"] == precision
    assert params["max_workspace_size_bytes"] == options.get("trt_workspace_bytes", 1 << 30)
    assert params["minimum_segment_size"] == options.get("trt_min_segment_size", 3)
    init = fake.calls[1][1]
    assert init["input_saved_model_dir"] == str(version_dir)
    assert init["input_saved_model_signature_key"] == "serving_default"
    built = fake.calls[3][1]
    assert len(built) == 8 and set(built[0]) == {"x"} and built[0]["x"].shape == (1, 8)
    assert fake.calls[4][1] == str(tmp_path / "x" / "1" / fmt)


def test_bad_precision_is_refused_before_converting(version_dir: Path, tmp_path: Path) -> None:
    fake = FakeTrt()
    registry = {"tftrt": TftrtFormat(build_info={"is_tensorrt_build": True}, trt_module=fake)}
    reports = convert_version(version_dir, model="x", version=1, formats=["tftrt"], out_root=tmp_path,
                              options={"trt_precision": "INT4"}, registry=registry, latency_runs=1)
    assert reports[0].status == "error"
    assert "INT4" in reports[0].error
    assert fake.calls == []
    with pytest.raises(ConvertError):
        from orchestrator.convert import raise_for_reports

        raise_for_reports(reports)
