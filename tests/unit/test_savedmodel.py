"""Inspect and export on real SavedModels: TF1 graphs, Keras 3 exports, corrupt folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import ModelError
from orchestrator.savedmodel import export_model, inspect_model, list_versions
from tests.helpers.models import half_plus_two_tf1, keras_classifier


@pytest.fixture(scope="module")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1: TF1 half_plus_two; 2: Keras 3; 00000003: corrupt; 4: not a SavedModel."""
    base = tmp_path_factory.mktemp("models") / "mixed"
    half_plus_two_tf1(base / "1")
    keras_classifier(base / "2")
    (base / "00000003").mkdir(parents=True)
    (base / "00000003" / "saved_model.pb").write_bytes(b"\x08\xff\xff garbage")
    (base / "4").mkdir()
    (base / "4" / "notes.txt").write_text("hello")
    (base / "not_a_version").mkdir()
    return base


def test_inspect_reads_tf1_and_keras3_and_reports_bad_versions(model_base: Path) -> None:
    infos = {v.version: v for v in inspect_model(model_base)}
    assert sorted(infos) == [1, 2, 3, 4]
    tf1 = infos[1]
    assert tf1.servable
    assert set(tf1.signatures) == {"serving_default", "classify_x_to_y", "regress_x_to_y", "tensorflow/serving/regress"}
    sig = tf1.signatures["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    assert sig.inputs["x"].dtype == "DT_FLOAT" and sig.inputs["x"].shape == [-1, 1]
    assert tf1.signatures["classify_x_to_y"].inputs["inputs"].dtype == "DT_STRING"

    keras3 = infos[2]
    assert keras3.servable
    out = keras3.signatures["serving_default"]
    assert out.inputs["features"].shape == [-1, 4]
    assert next(iter(out.outputs.values())).shape == [-1, 3]

    assert not infos[3].servable and "corrupt" in infos[3].error
    assert infos[3].path.endswith("00000003")
    assert not infos[4].servable and "no saved_model.pb" in infos[4].error


def test_inspect_cli_json_and_exit_codes(model_base: Path, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "orchestrator", "inspect", str(model_base), "-o", "json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    versions = {v["version"]: v for v in data["versions"]}
    assert versions[1]["signatures"]["serving_default"]["inputs"]["x"] == {"dtype": "DT_FLOAT", "shape": [-1, 1]}
    assert versions[3]["error"]

    only_bad = tmp_path / "bad"
    (only_bad / "1").mkdir(parents=True)
    run = subprocess.run([sys.executable, "-m", "orchestrator", "inspect", str(only_bad)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, "nothing servable is a failure"

    run = subprocess.run([sys.executable, "-m", "orchestrator", "inspect", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 3 and "does not exist" in run.stderr and "Traceback" not in run.stderr


def test_inspect_a_savedmodel_folder_says_to_add_a_version(model_base: Path) -> None:
    with pytest.raises(ModelError, match="not a base path"):
        inspect_model(model_base / "1")


def test_export_keras_h5_and_savedmodel(tmp_path: Path, model_base: Path) -> None:
    model = keras_classifier(seed=1)
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    models = tmp_path / "models"
    first = export_model(tmp_path / "m.keras", name="clf", models_dir=models)
    second = export_model(tmp_path / "m.h5", name="clf", models_dir=models)
    third = export_model(model_base / "1", name="clf", models_dir=models, version=9)
    assert (first.name, second.name, third.name) == ("1", "2", "9")
    assert list_versions(models / "clf") == [1, 2, 9]
    infos = {v.version: v for v in inspect_model(models / "clf")}
    assert all(v.servable for v in infos.values())
    assert "serving_default" in infos[1].signatures and "serving_default" in infos[2].signatures
    assert [p.name for p in (models / "clf").iterdir() if p.name.startswith(".")] == [], "no staging left"

    with pytest.raises(ModelError, match="never overwritten"):
        export_model(tmp_path / "m.keras", name="clf", models_dir=models, version=2)
    with pytest.raises(ModelError, match="not a valid model name"):
        export_model(tmp_path / "m.keras", name="../evil", models_dir=models)
    with pytest.raises(ModelError, match="not servable"):
        export_model(model_base / "00000003", name="clf", models_dir=models)
    with pytest.raises(ModelError, match="base path with version folders"):
        export_model(model_base, name="clf", models_dir=models)
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="Keras could not load it"):
        export_model(tmp_path / "junk.keras", name="clf", models_dir=models)
    assert list_versions(models / "clf") == [1, 2, 9], "failed exports leave nothing behind"
