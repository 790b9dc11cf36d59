"""Node.js and the npm packages the TF.js checks need, found where the install script put them.

`scripts/install_convert_deps.sh` runs `npm ci` in `js/` at the top of the checkout (its
package.json pins `@tensorflow/tfjs` and `playwright-core`), so the packages live in
`js/node_modules/`, outside the Python package (not committed, never in the wheel).
`TFSO_NODE_MODULES` points elsewhere, e.g. for an installed wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from orchestrator.convert.errors import ConvertError

NODE_PROJECT_DIR = Path(__file__).resolve().parents[2] / "js"
INSTALL_FIX = ("run scripts/install_convert_deps.sh (installs node packages into js/node_modules), "
               "or point TFSO_NODE_MODULES at a node_modules folder that has them")


def node_modules_dir() -> Path:
    override = os.environ.get("TFSO_NODE_MODULES")
    return Path(override) if override else NODE_PROJECT_DIR / "node_modules"


def find_node() -> str | None:
    return shutil.which("node")


def tfjs_package_dir() -> Path:
    return node_modules_dir() / "@tensorflow" / "tfjs"


def tfjs_bundle() -> Path:
    """The browser bundle of @tensorflow/tfjs, vendored from npm (never fetched from a CDN)."""
    return tfjs_package_dir() / "dist" / "tf.min.js"


def installed_version(package: str) -> str | None:
    try:
        data = json.loads((node_modules_dir() / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return str(data.get("version"))


def require_node(fmt: str = "tfjs") -> str:
    node = find_node()
    if node is None:
        raise ConvertError("node is not on PATH; TF.js models are checked in Node", format=fmt,
                           fix="install Node.js 18 or newer, then " + INSTALL_FIX)
    if not (tfjs_package_dir() / "package.json").is_file():
        raise ConvertError(f"@tensorflow/tfjs is not installed in {node_modules_dir()}", format=fmt,
                           fix=INSTALL_FIX)
    return node


def run_node_json(script: Path, request: dict[str, Any], *, timeout_s: float, fmt: str) -> Any:
    """Run a CommonJS script with our node_modules on NODE_PATH: JSON request in, JSON answer out."""
    node = require_node(fmt)
    env = {**os.environ, "NODE_PATH": str(node_modules_dir())}
    try:
        done = subprocess.run(
            [node, str(script)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ConvertError(f"{script.name} did not answer within {timeout_s:.0f} s", format=fmt) from exc
    if done.returncode != 0:
        raise ConvertError(f"{script.name} failed (exit {done.returncode})", format=fmt,
                           logs=done.stderr or done.stdout)
    try:
        return json.loads(done.stdout)
    except ValueError as exc:
        raise ConvertError(f"{script.name} printed no JSON answer", format=fmt,
                           logs=(done.stdout or "") + (done.stderr or "")) from exc


__all__ = [
    "NODE_PROJECT_DIR",
    "find_node",
    "installed_version",
    "node_modules_dir",
    "require_node",
    "run_node_json",
    "tfjs_bundle",
]
