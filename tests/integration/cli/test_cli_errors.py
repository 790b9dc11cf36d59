"""Every error `tfsctl` prints has an `error:` and a `fix:` line, and never a traceback.

Runs the installed `tfsctl` entry point as a user does, on specs written by each test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
TFSCTL = Path(sys.executable).with_name("tfsctl")


def tfsctl(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(TFSCTL), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def assert_two_lines(r: subprocess.CompletedProcess, error: str, code: int) -> None:
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == code, r.stderr
    lines = r.stderr.splitlines()
    assert any(ln.startswith("error: ") and error in ln for ln in lines), r.stderr
    assert any(ln.strip().startswith("fix: ") for ln in lines), r.stderr


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "models" / "demo" / "1").mkdir(parents=True)
    return tmp_path


def write(specs: Path, name: str, data: bytes | str) -> None:
    path = specs / "serving_configs" / f"{name}.yaml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


@pytest.mark.parametrize(
    "name, data, error",
    [
        ("tilde", "base_path: ~no_such_user_here/models\n", "cannot expand '~no_such_user_here'"),
        ("utf16", b"\xff\xfe\x00base_path: x\n", "not UTF-8 text: byte 0xff at offset 0"),
        ("deep", "base_path: x\nextra: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deep"),
        (
            "deepmap",
            "base_path: x\nextra:" + " {a:" * 3000 + " 1" + "}" * 3000 + "\n",
            "nested too deep",
        ),
    ],
)
def test_spec_files_that_used_to_crash(specs, name, data, error):
    write(specs, name, data)
    assert_two_lines(tfsctl(specs, "render", name, "--out", "out"), error, 2)


def test_yaml_alias_bomb_is_refused_quickly(specs):
    lines = ["base_path: ../models/demo", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):  # 9 levels of 9 aliases: 9**10 values once expanded
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    write(specs, "bomb", "\n".join(lines) + "\n")
    r = tfsctl(specs, "render", "bomb", "--out", "out", timeout=60)
    assert_two_lines(r, "YAML aliases expand to more than 10000 values", 2)


def test_small_aliases_still_work(specs):
    write(
        specs,
        "demo",
        "base_path: ../models/demo\nversion_labels: &l {stable: 1}\nx-note: *l\n",
    )
    r = tfsctl(specs, "render", "demo", "--out", "out")
    # x-note is not a field: the error is about it, proving the aliases were read
    assert_two_lines(r, "unknown field 'x-note'", 2)


def test_render_to_an_impossible_folder(specs):
    write(specs, "demo", "base_path: ../models/demo\n")
    r = tfsctl(specs, "render", "demo", "--out", "/dev/null/x")
    assert_two_lines(r, "cannot write to /dev/null/x: Not a directory", 1)


def test_predict_from_a_missing_file(specs):
    r = tfsctl(specs, "predict", "demo", "-f", "missing.json", "--url", "http://127.0.0.1:9")
    assert_two_lines(r, "cannot read missing.json: No such file or directory", 2)


@pytest.mark.parametrize(
    "args, error",
    [
        (["predict", "demo", "--data", "{bad json", "--url", "http://127.0.0.1:9"], "not JSON"),
        (["deploy", "demo", "--runtime", "bogus"], "'bogus' is not one of"),
        (
            ["predict", "demo", "--version", "1", "--label", "x", "--data", "[1]"],
            "--version and --label select the same thing",
        ),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_usage_errors_have_a_fix_line(specs, args, error):
    r = tfsctl(specs, *args)
    assert_two_lines(r, error, 2)
    assert "--help" in r.stderr


def test_serving_errors_have_a_fix_line(specs):
    r = tfsctl(
        specs, "predict", "demo", "--url", "http://127.0.0.1:9", "--timeout", "2", "--data", "[1]"
    )
    assert_two_lines(r, "", 6)
