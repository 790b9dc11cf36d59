"""Conformance on TF Serving's own test models, read from ../shared/testdata/tfserving (never
copied into the repo). Fails under CI, skips elsewhere, when that folder is not beside the checkout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.helpers.requires import SHARED_TESTDATA, require_shared
from tests.helpers.server import ServerProcess

UPSTREAM = SHARED_TESTDATA

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, scope="module")
def _needs_shared() -> None:
    require_shared()


def serve(model: str, base: Path) -> ServerProcess:
    return ServerProcess([f"--model_name={model}", f"--model_base_path={base}"])


def test_half_plus_two_documented_example_and_metadata() -> None:
    # The upstream metadata file was recorded with the model named "default".
    with serve("default", UPSTREAM / "saved_model_half_plus_two_cpu") as srv:
        srv.wait_until_available("default")
        url = f"{srv.rest_url}/v1/models/default"
        answer = requests.post(f"{url}:predict", json={"instances": [1.0, 2.0, 5.0]}, timeout=30)
        assert answer.json() == {"predictions": [2.5, 3.0, 4.5]}
        metadata = requests.get(f"{url}/versions/123/metadata", timeout=30).json()
        expected = json.loads((UPSTREAM / "half_plus_two_model_metadata.json").read_text())
        assert metadata == expected
        regress = requests.post(f"{url}:regress", json={"signature_name": "regress_x_to_y",
                                                        "examples": [{"x": 1.0}, {"x": 3.0}]}, timeout=30)
        assert regress.json() == {"results": [2.5, 3.5]}


def test_two_versions_and_a_bad_model() -> None:
    with serve("hpt", UPSTREAM / "saved_model_half_plus_two_2_versions") as srv:
        srv.wait_until_available("hpt")
        status = requests.get(f"{srv.rest_url}/v1/models/hpt", timeout=30).json()
        assert [s["version"] for s in status["model_version_status"]] == ["124"]
    with serve("bad", UPSTREAM / "bad_half_plus_two") as srv:
        states = srv.wait_until_states("bad", {123: "END"})
        status = requests.get(f"{srv.rest_url}/v1/models/bad", timeout=30).json()["model_version_status"][0]
        assert states[123] == "END" and status["status"]["error_code"] != "OK" and status["status"]["error_message"]
