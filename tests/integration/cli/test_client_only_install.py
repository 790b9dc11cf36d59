"""The plain install (`pip install tfserving-orchestrator`, no extras) in a fresh venv.

The checkout is built into a wheel once and installed with its base dependencies only; every
command is then run as a user would. Those that need an extra must say which one on `error:` /
`fix:` lines; none may print a traceback. The client side (predict) must work as is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
SERVE_FIX = "fix: pip install 'tfserving-orchestrator[serve]'"


def _can_build_here() -> bool:
    try:
        import setuptools
        import wheel  # noqa: F401
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("client_only")
    wheels = tmp / "wheels"
    # Build with this venv's setuptools when it has a recent one (fast); else in isolation.
    isolation = [] if _can_build_here() else ["--use-pep517"]
    no_isolation = ["--no-build-isolation"] if not isolation else []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *no_isolation, *isolation,
         "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    env_dir = tmp / "venv"
    # No pip inside (ensurepip costs seconds): this venv's pip installs into it (`--python`), the
    # same resolver and the same files as the user's `pip install`; no byte-compiling of the
    # dependencies ahead of time (Python compiles what it imports).
    venv.create(env_dir, with_pip=False)
    [wheel] = wheels.glob("tfserving_orchestrator-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "-q",
         "--no-compile", str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return env_dir


def tfsctl(env_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(env_dir / "bin" / "tfsctl"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_base_install_has_no_serving_extras(base_venv):
    py = str(base_venv / "bin" / "python")
    for module in ("tensorflow", "tensorflow_serving", "docker", "aiohttp"):
        r = subprocess.run([py, "-c", f"import {module}"], capture_output=True, timeout=60)
        assert r.returncode != 0, f"{module} is installed in the base venv"


@pytest.mark.parametrize(
    "args",
    [
        ("deploy", "demo"),
        ("render", "demo", "--out", "out"),
        ("compose", "demo"),
        ("export", "model.keras", "--name", "x"),
        ("demo-model",),
        ("warmup", "demo"),
        ("convert", "demo", "--to", "tflite"),
        ("status", "demo"),
        ("rollout", "start", "demo", "--version", "2"),
        ("web", "demo"),
    ],
    ids=lambda a: a[0],
)
def test_every_command_fails_with_error_and_fix_lines(base_venv, tmp_path, args):
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "models" / "demo" / "1").mkdir(parents=True)
    (tmp_path / "serving_configs" / "demo.yaml").write_text("base_path: ../models/demo\n")
    r = tfsctl(base_venv, tmp_path, *args)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode != 0
    assert "error: " in r.stderr and "fix: " in r.stderr, r.stderr
    if "needs the 'serve' extra" in r.stderr:
        assert SERVE_FIX in r.stderr


@pytest.mark.parametrize(
    "args, module",
    [
        (("deploy", "demo"), "tensorflow_serving"),
        (("render", "demo", "--out", "out"), "tensorflow_serving"),
        (("compose", "demo"), "tensorflow_serving"),
        (("demo-model",), "keras"),
    ],
    ids=lambda a: a[0] if isinstance(a, tuple) else a,
)
def test_commands_that_need_serve_name_it(base_venv, tmp_path, args, module):
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "models" / "demo" / "1").mkdir(parents=True)
    (tmp_path / "serving_configs" / "demo.yaml").write_text("base_path: ../models/demo\n")
    r = tfsctl(base_venv, tmp_path, *args)
    assert r.returncode == 1
    assert (
        f"error: this command needs the 'serve' extra: the module {module} is not installed"
        in r.stderr
    )
    assert SERVE_FIX in r.stderr
    assert "Traceback" not in r.stderr


def test_client_commands_work_without_extras(base_venv, tmp_path):
    r = tfsctl(base_venv, tmp_path, "--help")
    assert r.returncode == 0 and "predict" in r.stdout
    # Nothing listens on port 9 of loopback: a serving error with both lines, no traceback.
    r = tfsctl(
        base_venv, tmp_path, "predict", "m", "--url", "http://127.0.0.1:9", "--timeout", "2",
        "--data", '{"instances": [1.0]}',
    )  # fmt: skip
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 6, r.stderr
    assert "error: " in r.stderr and "fix: " in r.stderr
