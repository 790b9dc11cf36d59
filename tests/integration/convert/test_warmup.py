"""Warmup records: written into the version folder, parsed back with TF Serving's own protos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from orchestrator.convert import ConvertError, load_samples, read_signature
from orchestrator.convert.warmup import (
    MAX_RECORDS,
    WARMUP_RELATIVE_PATH,
    build_records,
    read_records,
    write_warmup,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def own_version(version_dir: Path, tmp_path: Path) -> Path:
    """A copy of the model (warmup writes into the version folder)."""
    target = tmp_path / "models" / "x" / "1"
    shutil.copytree(version_dir, target)
    return target


def test_records_parse_back(own_version: Path, samples_npz: Path, samples_array: np.ndarray) -> None:
    import tensorflow as tf

    samples = load_samples(samples_npz, read_signature(own_version))
    path = write_warmup(own_version, samples, model_name="x", signature_key="serving_default", count=5)
    assert path == own_version / WARMUP_RELATIVE_PATH
    logs = read_records(path)
    assert len(logs) == 5
    for i, log in enumerate(logs):
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == "x"
        assert request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["x"]
        tensor = tf.make_ndarray(request.inputs["x"])
        np.testing.assert_array_equal(tensor, samples_array[i : i + 1])


def test_batches_cycle_through_the_samples(own_version: Path, samples_npz: Path) -> None:
    samples = load_samples(samples_npz, read_signature(own_version)).head(3)
    records = build_records(samples, model_name="x", signature_key="serving_default", count=4,
                            batch_size=2)
    shapes = [[d.size for d in r.predict_log.request.inputs["x"].tensor_shape.dim] for r in records]
    assert shapes == [[2, 8]] * 4


def test_model_still_loads_with_warmup_file(own_version: Path, samples_npz: Path) -> None:
    import tensorflow as tf

    samples = load_samples(samples_npz, read_signature(own_version))
    write_warmup(own_version, samples, model_name="x", signature_key="serving_default", count=2)
    loaded = tf.saved_model.load(str(own_version))
    assert "serving_default" in loaded.signatures


@pytest.mark.parametrize("count", [0, MAX_RECORDS + 1])
def test_count_is_bounded(count: int, own_version: Path, samples_npz: Path) -> None:
    samples = load_samples(samples_npz, read_signature(own_version))
    with pytest.raises(ConvertError, match="1 to 1000"):
        build_records(samples, model_name="x", signature_key="serving_default", count=count)


def test_cli_writes_and_reports(own_version: Path, samples_npz: Path) -> None:
    from orchestrator.cli import cli

    base = own_version.parent
    result = CliRunner().invoke(
        cli, ["warmup", str(base), "--samples", str(samples_npz), "--count", "7", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["records"] == 7 and data["version"] == 1 and data["model"] == "x"
    assert len(read_records(Path(data["path"]))) == 7


def test_cli_warns_loudly_without_samples(own_version: Path) -> None:
    from orchestrator.cli import cli

    result = CliRunner().invoke(cli, ["warmup", str(own_version), "--count", "2"])
    assert result.exit_code == 0, result.output
    assert "NO SAMPLES GIVEN" in result.stderr
    assert len(read_records(own_version / WARMUP_RELATIVE_PATH)) == 2
