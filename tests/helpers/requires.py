"""What a test needs from the machine: under CI a missing piece fails the run, elsewhere it skips.

CI (`CI` set to anything but "", "0" or "false"; `.ci/run` sets it) installs everything the suite
needs, so a tool that is missing there is a broken install and must not quietly skip a feature's
tests. On a developer's machine the skip says what to install.

    require_tool("haproxy", "apt-get install -y haproxy (scripts/setup_system.sh)")
    require_module("ml_dtypes", "pip install -e '.[serve]'")
    require_server()  # tfs-model-server beside the interpreter
    require_shared()  # ../shared/testdata/tfserving beside the checkout
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_TESTDATA = REPO.parent / "shared" / "testdata" / "tfserving"
SETUP_SYSTEM = "bash scripts/setup_system.sh"
INSTALL_PROJECT = "make install (pip install -e '.[serve,dev,convert,bench,kubernetes]')"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(condition: object, what: str, install: str) -> None:
    """Fail under CI, skip elsewhere, naming `what` is missing and how to install it."""
    if condition:
        return
    message = f"{what} is not installed; install it with: {install}"
    if in_ci():
        pytest.fail(f"{message} (CI must install everything the suite needs)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_tool(name: str, install: str = SETUP_SYSTEM) -> str:
    """The path of the program `name` on PATH."""
    path = shutil.which(name)
    require(path, f"the `{name}` program", install)
    assert path is not None
    return path


def require_haproxy() -> str:
    return require_tool("haproxy", f"apt-get install -y haproxy, or {SETUP_SYSTEM}")


def require_module(name: str, install: str = INSTALL_PROJECT) -> None:
    require(importlib.util.find_spec(name) is not None, f"the python package {name}", install)


def server_bin() -> Path:
    return Path(sys.executable).with_name("tfs-model-server")


def require_server() -> Path:
    """`tfs-model-server`, installed beside this interpreter by the project's editable install."""
    path = server_bin()
    require(path.exists(), f"tfs-model-server (expected at {path})", INSTALL_PROJECT)
    return path


def require_shared() -> Path:
    """TF Serving's own test models in ../shared (read only, never copied into the repo)."""
    require(SHARED_TESTDATA.is_dir(), f"TF Serving's test data at {SHARED_TESTDATA}",
            "check out the shared folder beside the repository (../shared/testdata/tfserving)")
    return SHARED_TESTDATA
