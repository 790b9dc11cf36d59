"""bench/fuzz_soak.py, briefly, against the shared server: hostile mix, no 5xx, no valid failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "fuzz_soak.py"


def test_short_soak_sees_no_server_fault(server):
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--rest", server.rest_url, "--grpc", server.grpc_target,
         "--model", "half_plus_two", "--duration-s", "6", "--max-requests", "600",
         "--concurrency", "2", "--pid", str(server.proc.pid), "--bomb-mib", "16", "--json"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    summary = json.loads(r.stdout)
    assert r.returncode == 0, summary
    assert summary["server_faults"] == {} and summary["valid_failures"] == {}
    counts = summary["counts"]
    assert counts.get("2xx", 0) > 0 and counts.get("4xx", 0) > 0
    assert "5xx" not in counts and "grpc-server-fault" not in counts
    assert summary["rss_mib"]["max"] > 0


def test_refuses_endpoints_off_loopback():
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--rest", "http://192.0.2.1:8501", "--model", "m"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0
    assert "not loopback" in r.stderr and "fix:" in r.stderr
