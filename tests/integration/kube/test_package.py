"""`tfsctl package`: a real image built by dockerd, and its init-container copy run for real."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers.requires import SETUP_SYSTEM, require, require_module

pytestmark = pytest.mark.timeout(300)


def _docker():  # type: ignore[no-untyped-def]
    require_module("docker")
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no daemon here
        require(False, f"a running dockerd ({exc})", SETUP_SYSTEM)
    return client


def _model(base: Path) -> None:
    """Two version folders; the image only carries files, so no TensorFlow is needed here."""
    for version in (1, 2):
        (base / str(version) / "variables").mkdir(parents=True)
        (base / str(version) / "saved_model.pb").write_bytes(b"graph-%d" % version)
        (base / str(version) / "variables" / "variables.index").write_bytes(b"index")


def test_package_builds_a_modelcar_whose_cp_copies_the_versions(tmp_path: Path) -> None:
    client = _docker()
    require(Path("/bin/busybox").is_file(), "a static busybox", "apt-get install -y busybox-static")
    _model(tmp_path / "models" / "mcar")
    configs = tmp_path / "serving_configs"
    configs.mkdir()
    tag = f"tfso-test/modelcar-{uuid.uuid4().hex[:10]}:1"
    (configs / "mcar.yaml").write_text(f"model_uri: image://{tag}\n")  # base_path defaults to ../models/mcar
    result = subprocess.run([sys.executable, "-m", "orchestrator", "package", "mcar", "--image", tag,
                             "--configs-dir", str(configs)], capture_output=True, text=True, timeout=240,
                            check=False)
    try:
        assert result.returncode == 0, result.stderr
        assert "versions [1, 2]" in result.stdout
        image = client.images.get(tag)
        assert image.attrs["Config"]["User"] == "1000:1000"
        assert image.attrs["Config"]["Labels"]["io.tfso.model"] == "mcar"
        # what the rendered init container runs: cp -R /models/NAME/. /mnt/model/
        out = tmp_path / "emptydir"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        client.containers.run(tag, ["cp", "-R", "/models/mcar/.", "/mnt/model/"], remove=True,
                              network_mode="none", volumes={str(out): {"bind": "/mnt/model", "mode": "rw"}})
        assert (out / "2" / "saved_model.pb").read_bytes() == b"graph-2"
        assert (out / "1" / "variables" / "variables.index").read_bytes() == b"index"
    finally:
        try:
            client.images.remove(tag, force=True)
        except Exception:  # the build failed: nothing to remove
            pass


def test_package_errors_name_the_fix(tmp_path: Path) -> None:
    configs = tmp_path / "serving_configs"
    configs.mkdir()
    (configs / "empty.yaml").write_text("model_uri: image://r.example.com/m/empty:1\n")
    result = subprocess.run([sys.executable, "-m", "orchestrator", "package", "empty", "--image",
                             "r.example.com/m/empty:1", "--configs-dir", str(configs)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "holds no numbered version folders" in result.stderr and "fix:" in result.stderr
    _model(tmp_path / "models" / "empty")
    result = subprocess.run([sys.executable, "-m", "orchestrator", "package", "empty", "--image", "NoTag",
                             "--configs-dir", str(configs)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode != 0 and "not an image reference with a tag" in result.stderr
