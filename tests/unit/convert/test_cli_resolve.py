"""Which version folder NAME means for `tfsctl convert/web/warmup` (no TensorFlow needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.cli.convert import resolve_version
from orchestrator.errors import ModelError


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "models" / "x"
    for v in (1, 2, 10):
        (root / str(v)).mkdir(parents=True)
        (root / str(v) / "saved_model.pb").write_bytes(b"")
    (root / "notes").mkdir()
    return root


def test_base_path_newest_or_given(base: Path, tmp_path: Path) -> None:
    configs = tmp_path / "none"
    assert resolve_version(str(base), None, configs) == ("x", 10, base / "10")
    assert resolve_version(str(base), 2, configs) == ("x", 2, base / "2")
    with pytest.raises(ModelError, match=r"no version 3 \(there are 1, 2, 10\)"):
        resolve_version(str(base), 3, configs)


def test_version_folder(base: Path, tmp_path: Path) -> None:
    assert resolve_version(str(base / "2"), None, tmp_path) == ("x", 2, (base / "2").resolve())
    with pytest.raises(ModelError, match="is version 2, not 1"):
        resolve_version(str(base / "2"), 1, tmp_path)


def test_spec_name(base: Path, tmp_path: Path) -> None:
    configs = tmp_path / "serving_configs"
    configs.mkdir()
    (configs / "x.yaml").write_text(f"base_path: {base}\n")
    model, version, folder = resolve_version("x", None, configs)
    assert (model, version) == ("x", 10) and folder.samefile(base / "10")


def test_a_spec_wins_over_a_folder_of_the_same_name(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "elsewhere" / "x"
    (other / "7").mkdir(parents=True)
    configs = tmp_path / "serving_configs"
    configs.mkdir()
    (configs / "x.yaml").write_text(f"base_path: {other}\n")
    monkeypatch.chdir(base.parent)  # ./x is the folder with versions 1, 2, 10
    assert resolve_version("x", None, configs)[1] == 7
    assert resolve_version("x", None, tmp_path / "no-configs")[1] == 10


def test_empty_base_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no numbered version folders"):
        resolve_version(str(tmp_path / "empty"), None, tmp_path)


def test_web_without_export_says_how_to_convert(base: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["web", str(base), "--out-dir", str(tmp_path / "exports")])
    assert "no TF.js export" in str(result.exception)
    assert "tfsctl convert" in str(result.exception) and "--to tfjs" in str(result.exception)


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for command in ("convert", "web", "warmup"):
        assert command in result.output
