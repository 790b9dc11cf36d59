"""`tfsctl web` as users run it: prints its URL, serves the export, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from orchestrator.convert import convert_version
from tests.integration.convert.conftest import need_module, need_node_packages

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
DEADLINE_S = 60.0


def test_web_command_serves_and_stops(model_base: Path, tmp_path: Path) -> None:
    need_module("tensorflowjs")
    need_node_packages()
    out = tmp_path / "exports"
    report = convert_version(model_base / "1", model="x", version=1, formats=["tfjs"],
                             out_root=out, latency_runs=0)[0]
    assert report.status == "ok", report.error
    log = tmp_path / "web.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "web", str(model_base), "--port", "0",
             "--out-dir", str(out)],
            cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        url = None
        deadline = time.monotonic() + DEADLINE_S
        while url is None:
            text = log.read_text()
            url = next((w for w in text.split() if w.startswith("http://127.0.0.1:")), None)
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tfsctl web printed no URL within {DEADLINE_S:.0f} s:\n{text}")
            time.sleep(0.1)
        with urllib.request.urlopen(url + "api/info", timeout=10) as resp:
            info = json.loads(resp.read())
        assert (info["model"], info["version"], info["format"]) == ("x", 1, "tfjs")
        with urllib.request.urlopen(url + "vendor/tf.min.js", timeout=10) as resp:
            assert resp.status == 200 and len(resp.read()) > 100_000
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            pytest.fail("tfsctl web did not stop on SIGTERM within 20 s")
    assert code == 0, log.read_text()
