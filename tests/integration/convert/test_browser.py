"""End to end in a real browser: `tfsctl web`'s page in Debian's headless Chromium (driven by
playwright-core) predicts what the SavedModel predicts, on typed and on uploaded inputs, and
fetches nothing but 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.convert import convert_version, load_samples, read_signature
from orchestrator.convert.node import find_node, node_modules_dir
from orchestrator.web import WebApp
from tests.integration.convert.conftest import chromium_path, need, need_module, need_node_packages

pytestmark = pytest.mark.integration
DRIVER = Path(__file__).with_name("browser_check.cjs")
PAGE_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def tfjs_export(version_dir: Path, samples_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_module("tensorflowjs")
    need_node_packages()
    need((node_modules_dir() / "playwright-core" / "package.json").is_file(), "playwright-core")
    need(chromium_path() is not None, "chromium")
    out = tmp_path_factory.mktemp("exports")
    samples = load_samples(samples_npz, read_signature(version_dir)).head(4)
    report = convert_version(version_dir, model="x", version=1, formats=["tfjs"], out_root=out,
                             samples=samples, latency_runs=0)[0]
    assert report.status == "ok", report.error
    return out / "x" / "1" / "tfjs"


@pytest.fixture(scope="module")
def app(tfjs_export: Path):
    with WebApp(tfjs_export, model="x", version=1) as running:
        yield running


def drive(request: dict[str, Any]) -> dict[str, Any]:
    node = find_node()
    assert node is not None
    env = {**os.environ, "NODE_PATH": str(node_modules_dir()), "CHROMIUM": chromium_path() or ""}
    done = subprocess.run(
        [node, str(DRIVER)], input=json.dumps({"timeout_ms": PAGE_TIMEOUT_MS, **request}),
        capture_output=True, text=True, env=env, timeout=PAGE_TIMEOUT_MS / 1000 * 3, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def page_outputs(answer: dict[str, Any]) -> np.ndarray:
    assert answer["state"] == "done", (answer["status"], answer["console"])
    raw = json.loads(answer["raw"])["output_0"]
    return np.asarray(raw["data"], dtype=np.float32).reshape(raw["shape"])


def test_typed_input_predicts_like_the_savedmodel(
    app: WebApp, samples_array: np.ndarray, reference_outputs: np.ndarray, tmp_path: Path
) -> None:
    batch = samples_array[:3]
    answer = drive({"url": app.url, "input": json.dumps(batch.tolist()),
                    "screenshot": str(tmp_path / "page.png")})
    got = page_outputs(answer)
    want = reference_outputs[:3]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert answer["top1"] == np.argmax(want, axis=-1).tolist()
    assert answer["offsite"] == []
    assert any(u.endswith("/vendor/tf.min.js") for u in answer["requests"])
    assert (tmp_path / "page.png").stat().st_size > 0


def test_one_example_without_batch_dimension(
    app: WebApp, samples_array: np.ndarray, reference_outputs: np.ndarray
) -> None:
    answer = drive({"url": app.url + "?backend=cpu", "input": json.dumps(samples_array[5].tolist())})
    assert answer["backend"] == "cpu"
    np.testing.assert_allclose(page_outputs(answer), reference_outputs[5:6], atol=1e-5)


def test_uploaded_csv_predicts_like_the_savedmodel(
    app: WebApp, samples_array: np.ndarray, reference_outputs: np.ndarray, tmp_path: Path
) -> None:
    csv = tmp_path / "inputs.csv"
    rows = samples_array[10:12]
    csv.write_text("\n".join(",".join(repr(float(v)) for v in row) for row in rows) + "\n")
    answer = drive({"url": app.url, "upload": str(csv)})
    np.testing.assert_allclose(page_outputs(answer), reference_outputs[10:12], atol=1e-4)


def test_wrong_shape_is_shown_as_an_error(app: WebApp) -> None:
    answer = drive({"url": app.url, "input": "[[1, 2, 3]]"})
    assert answer["state"] == "error"
    assert "wants float32 [?, 8]" in answer["status"]
