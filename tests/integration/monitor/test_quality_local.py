"""Is the model still right? Drift and late-label accuracy on a real deployment, end to end.

A real Keras classifier deployed on the local runtime with payload logging at 100%, a real
Prometheus (`tfsctl monitor up`) scraping the quality exporter. Traffic drawn from the training
distribution leaves drift under the threshold and the drift alert silent; traffic with one
feature shifted makes `tfsctl monitor drift` exit 1 naming that feature and fires
TfsoFeatureDrift. Labels joined by request id give exactly the accuracy computed here from the
answers the client got, in the CLI and in Prometheus. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from orchestrator.runtime.base import free_port
from tests.helpers.models import keras_classifier
from tests.helpers.rollout import tfsctl, wait_for

pytestmark = pytest.mark.integration
MODEL = "qual"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is needed: `make system` installs it")
    root = tmp_path_factory.mktemp("quality")
    keras_classifier(root / "models" / MODEL / "1", seed=3)
    rng = np.random.default_rng(11)
    np.savez(root / "train.npz", features=rng.normal(size=(5000, 4)).astype(np.float32))
    (root / "serving_configs").mkdir()
    rest, grpc, prom = free_port(), free_port(), free_port()
    (root / "serving_configs" / f"{MODEL}.yaml").write_text(
        f"base_path: ../models/{MODEL}\nports: {{grpc: {grpc}, rest: {rest}}}\n"
        "logging: {sample: 1.0, path: ../logs, max_mb: 64}\n")
    run = tfsctl(root, "deploy", MODEL, "--runtime", "local")
    assert run.returncode == 0, run.stderr
    try:
        run = tfsctl(root, "monitor", "up", MODEL, "--port", str(prom), "--scrape-interval", "0.5",
                     "--eval-interval", "0.5", "--for", "1", "--drift-refresh", "0.5",
                     "--max-psi", "0.2", "--min-accuracy", "0.9")
        assert run.returncode == 0, run.stderr + run.stdout
        assert "drift/accuracy exporter" in run.stdout
        yield {"root": root, "rest": f"http://127.0.0.1:{rest}", "prom": f"http://127.0.0.1:{prom}",
               "rng": rng, "sent": {}}
    finally:
        tfsctl(root, "monitor", "down", MODEL, timeout=60)
        tfsctl(root, "stop", MODEL, timeout=60)


def send(d: dict[str, Any], x: np.ndarray, tag: str) -> None:
    """One request per row, with our request id; keep what the client got back."""
    with requests.Session() as s:
        for i, row in enumerate(x):
            rid = f"{tag}-{i}"
            r = s.post(f"{d['rest']}/v1/models/{MODEL}:predict",
                       json={"instances": [row.tolist()]}, headers={"X-Request-Id": rid},
                       timeout=30)
            assert r.status_code == 200, r.text
            assert r.headers["X-Request-Id"] == rid
            d["sent"][rid] = (row, np.array(r.json()["predictions"][0]))


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    body = requests.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def firing(prom: str, name: str) -> list[dict[str, Any]]:
    alerts = requests.get(f"{prom}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def drift_json(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    run = tfsctl(root, "monitor", "drift", MODEL, "--since", "1h", "-o", "json", *args)
    assert run.returncode in (0, 1), run.stderr
    return run.returncode, json.loads(run.stdout)


def logged(root: Path, rows: int) -> tuple[int, dict[str, Any]] | None:
    code, data = drift_json(root)
    return (code, data) if data["rows"].get("1") == rows else None


def test_unshifted_traffic_stays_quiet(deployed: dict[str, Any]) -> None:
    root, prom = deployed["root"], deployed["prom"]
    run = tfsctl(root, "monitor", "baseline", MODEL, "--samples", "train.npz", "-o", "json")
    assert run.returncode == 0, run.stderr
    assert {f["name"] for f in json.loads(run.stdout)["features"]} == {
        f"features[{i}]" for i in range(4)}
    send(deployed, deployed["rng"].normal(size=(400, 4)).astype(np.float32), "calm")
    code, data = wait_for(lambda: logged(root, 400), 60, "400 logged rows")
    assert code == 0 and data["drifted"] == 0, data
    assert max(f["psi"] for f in data["features"]) < 0.2
    # Prometheus has held 400 rows' drift for longer than the alert's `for` (1 s): still silent.
    wait_for(lambda: query(prom, f'min_over_time(tfso_drift_window_rows{{model="{MODEL}"}}[3s]) '
                                 "== 400 and count_over_time(tfso_drift_window_rows[3s]) >= 4"),
             60, "3 s of scrapes at 400 rows")
    psi = query(prom, "model_version_feature:tfso_drift_psi:max")
    assert len(psi) == 4 and all(float(s["value"][1]) < 0.2 for s in psi), psi
    assert firing(prom, "TfsoFeatureDrift") == []


def test_shifted_feature_raises_drift_and_fires_the_alert(deployed: dict[str, Any],
                                                          tmp_path: Path) -> None:
    root, prom = deployed["root"], deployed["prom"]
    x = deployed["rng"].normal(size=(1600, 4)).astype(np.float32)
    x[:, 2] += 2.0
    send(deployed, x, "shift")
    code, data = wait_for(lambda: logged(root, 2000), 60, "2000 logged rows")
    assert code == 1
    by = {f["feature"]: f for f in data["features"]}
    assert by["features[2]"]["drifted"] and by["features[2]"]["psi"] > 1
    assert all(by[f"features[{i}]"]["psi"] < 0.2 for i in (0, 1, 3)), by
    alerts = wait_for(lambda: firing(prom, "TfsoFeatureDrift"), 60, "TfsoFeatureDrift firing")
    assert {a["labels"]["feature"] for a in alerts} == {"features[2]"}
    assert alerts[0]["labels"]["version"] == "1" and alerts[0]["labels"]["model"] == MODEL
    # The table and the PNG; --version filters.
    png = tmp_path / "drift.png"
    run = tfsctl(root, "monitor", "drift", MODEL, "--out", str(png))
    assert run.returncode == 1 and "DRIFT" in run.stdout and "features[2]" in run.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = tfsctl(root, "monitor", "drift", MODEL, "--version", "2")
    assert run.returncode == 4 and "no logged predictions" in run.stderr and "fix:" in run.stderr


def test_late_labels_give_the_offline_accuracy(deployed: dict[str, Any], tmp_path: Path) -> None:
    root, prom = deployed["root"], deployed["prom"]
    labels = tmp_path / "labels.csv"
    rows = []
    for n, (rid, (x, _)) in enumerate(sorted(deployed["sent"].items())):
        if n % 3 == 0:
            rows.append((rid, str(int(np.argmax(x[:3])))))
    with open(labels, "w", newline="") as fh:
        csv.writer(fh).writerows([("request_id", "label"), *rows, ("never-sent", "1")])
    want = np.mean([int(np.argmax(deployed["sent"][rid][1])) == int(label) for rid, label in rows])
    run = tfsctl(root, "monitor", "feedback", MODEL, "--labels", str(labels), "-o", "json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["joined"] == len(rows) and data["unmatched"] == 1
    assert data["kind"] == "classification"
    assert data["versions"][0]["accuracy"] == want  # exactly
    assert sum(w["rows"] for w in data["windows"]) == len(rows)

    def accuracy() -> float | None:
        got = query(prom, "model_version:tfso_feedback_accuracy:min")
        return float(got[0]["value"][1]) if got else None

    assert wait_for(accuracy, 60, "the accuracy gauge in Prometheus") == pytest.approx(want)
    if want < 0.9:
        wait_for(lambda: firing(prom, "TfsoAccuracyLow"), 60, "TfsoAccuracyLow firing")
    table = tfsctl(root, "monitor", "feedback", MODEL, "--labels", str(labels))
    assert table.returncode == 0 and "PRECISION" in table.stdout


def test_baseline_from_the_log_includes_outputs(deployed: dict[str, Any]) -> None:
    root = deployed["root"]
    run = tfsctl(root, "monitor", "baseline", MODEL, "--from-log", "--since", "1h", "-o", "json")
    assert run.returncode == 0, run.stderr
    feats = {f["name"]: f for f in json.loads(run.stdout)["features"]}
    assert feats["output_0:class"]["kind"] == "categorical"
    assert feats["output_0:class"]["side"] == "output" and feats["features[0]"]["count"] == 2000
    # Against a baseline of the same rows, nothing drifts.
    code, data = drift_json(root)
    assert code == 0 and max(f["psi"] for f in data["features"]) < 1e-9
