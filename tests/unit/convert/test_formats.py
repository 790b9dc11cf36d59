from __future__ import annotations

import sys

import numpy as np
import pytest

from orchestrator.convert import FORMATS, ConvertError, parse_formats
from orchestrator.convert.onnx import DEFAULT_OPSET, _match_names, check_opset, tf2onnx_command
from orchestrator.convert.tflite import dequantize, quantize
from orchestrator.convert.tftrt import TrtOptions, require_tensorrt, tensorrt_build_info


def test_parse_formats() -> None:
    assert parse_formats("tflite, ONNX,tflite") == ["tflite", "onnx"]
    assert parse_formats(("tfjs", "tflite-int8,tfjs-f16")) == ["tfjs", "tflite-int8", "tfjs-f16"]
    with pytest.raises(ConvertError, match="unknown format 'coreml'"):
        parse_formats("tflite,coreml")
    with pytest.raises(ConvertError, match="no format"):
        parse_formats(" , ")


def test_every_issue_format_is_registered() -> None:
    assert set(FORMATS) >= {"tflite", "tflite-dynamic", "tflite-int8", "onnx", "tfjs", "tfjs-f16",
                            "tfjs-uint8", "tftrt"}


def test_tf2onnx_command_converts_the_savedmodel(tmp_path) -> None:
    cmd = tf2onnx_command(tmp_path / "1", "serving_default", DEFAULT_OPSET, tmp_path / "m.onnx")
    assert cmd[:3] == [sys.executable, "-m", "tf2onnx.convert"]
    assert cmd[cmd.index("--saved-model") + 1] == str(tmp_path / "1")
    assert cmd[cmd.index("--opset") + 1] == "17"
    assert cmd[cmd.index("--signature_def") + 1] == "serving_default"


@pytest.mark.parametrize("opset", [12, 19])
def test_opset_range(opset: int) -> None:
    assert check_opset(18) == 18
    with pytest.raises(ConvertError, match="13 to 18"):
        check_opset(opset)


def test_onnx_name_matching() -> None:
    assert _match_names(["x"], ["x"]) == {"x": "x"}
    assert _match_names(["x"], ["x:0"]) == {"x": "x:0"}
    assert _match_names(["a", "b"], ["in0", "in1"]) == {"a": "in0", "b": "in1"}
    with pytest.raises(ConvertError, match="cannot match"):
        _match_names(["a", "b"], ["in0"])


def test_quantize_round_trip() -> None:
    values = np.array([-1.0, 0.0, 0.5, 1.0, 100.0], np.float32)
    q = quantize(values, 1 / 128, 0, np.int8)
    assert q.dtype == np.int8
    assert q.tolist() == [-128, 0, 64, 127, 127]  # clipped at the int8 range
    np.testing.assert_allclose(dequantize(q, 1 / 128, 0)[:3], [-1.0, 0.0, 0.5])
    np.testing.assert_allclose(dequantize(np.array([-128], np.int8), 1 / 256, -128), [0.0])


def test_trt_options() -> None:
    assert TrtOptions().conversion_kwargs() == {
        "precision_mode": "FP32", "max_workspace_size_bytes": 1 << 30, "minimum_segment_size": 3,
    }
    assert TrtOptions(precision="fp16").precision == "FP16"
    assert TrtOptions.from_options({}, "tftrt-fp16").precision == "FP16"
    assert TrtOptions.from_options({"trt_precision": None}, "tftrt").precision == "FP32"
    with pytest.raises(ConvertError, match="INT8"):
        TrtOptions(precision="INT8")
    with pytest.raises(ConvertError, match="positive"):
        TrtOptions(minimum_segment_size=0)


def test_tensorrt_build_check() -> None:
    require_tensorrt({"is_tensorrt_build": True})
    with pytest.raises(ConvertError) as info:
        require_tensorrt({"is_tensorrt_build": False, "cuda_version": "12"})
    text = str(info.value)
    assert "built without TensorRT" in text and "NVIDIA" in text and "fix:" in text
    assert info.value.exit_code == 8
    assert tensorrt_build_info({})["is_tensorrt_build"] is False
