"""The tensorflowjs route (installed --no-deps beside TF 2.21) and the Node runner."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.convert import ConvertError, Samples
from orchestrator.convert.node import run_node_json
from tests.integration.convert.conftest import need_module, need_node_packages

pytestmark = pytest.mark.integration


def test_converter_imports_without_tfdf_hub_or_jax() -> None:
    need_module("tensorflowjs")
    from orchestrator.convert.tfjs import import_saved_model_converter

    module = import_saved_model_converter()
    assert hasattr(module, "convert_tf_saved_model")
    # No placeholder is left behind for other code to trip over.
    for name in ("tensorflow_decision_forests", "tensorflow_hub"):
        left = sys.modules.get(name)
        assert left is None or not getattr(left, "__orchestrator_placeholder__", False)


def test_node_runner_reports_a_broken_model(tmp_path: Path) -> None:
    need_node_packages()
    from orchestrator.convert.tfjs import TfjsNodeRunner

    (tmp_path / "model.json").write_text("{not json")
    samples = Samples({"x": np.zeros((1, 8), np.float32)}, "synthetic")
    with pytest.raises(ConvertError) as info:
        TfjsNodeRunner(tmp_path).run(samples, latency_runs=0)
    assert "failed (exit 1)" in str(info.value) and "JSON" in str(info.value)


def test_run_node_json_round_trip(tmp_path: Path) -> None:
    need_node_packages()
    script = tmp_path / "echo.cjs"
    script.write_text(
        "const fs = require('fs'); const tf = require('@tensorflow/tfjs');"
        "const r = JSON.parse(fs.readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify({got: r.n + 1, tfjs: tf.version.tfjs}));"
    )
    assert run_node_json(script, {"n": 41}, timeout_s=60, fmt="tfjs") == {"got": 42, "tfjs": "4.22.0"}
