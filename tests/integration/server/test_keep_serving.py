"""The served version keeps serving when its files go wrong, as with TF Serving's file-system poll.

One server polls every second; each test breaks the files of its own model and checks, over
several polls, that predictions go on, the version stays AVAILABLE, and status/logs say why.
"""

from __future__ import annotations

import shutil

import grpc
import pytest
import requests

from tests.helpers.server import ServerProcess, export_half_plus_two_tf1, wait_until
from tests.integration.server.test_versions import config, entry, reload

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("keep")
    src = root / "src"
    export_half_plus_two_tf1(src, versions=(1,))
    bases = {}
    for name in ("moved", "filed", "reloaded", "witness"):
        bases[name] = root / name
        shutil.copytree(src / "1", bases[name] / "1")
    cfg = root / "models.config"
    cfg.write_text(
        config(
            *(entry(n, b, 'version_labels { key: "stable" value: 1 }') for n, b in bases.items())
        )
    )
    args = [f"--model_config_file={cfg}", "--file_system_poll_wait_seconds=1"]
    with ServerProcess(args) as srv:
        for name in bases:
            srv.wait_until_available(name, [1])
        yield srv, bases


def predict(srv, model: str, suffix: str = "") -> tuple[int, dict]:
    r = requests.post(
        f"{srv.rest_url}/v1/models/{model}{suffix}:predict", json={"instances": [1.0]}, timeout=30
    )
    return r.status_code, r.json()


def status(srv, model: str) -> dict:
    return requests.get(f"{srv.rest_url}/v1/models/{model}", timeout=10).json()


def polls_pass(srv, bases, n: int = 3) -> None:
    """Wait until `n` more polls have run: each adds a version to the witness model and waits for it."""
    witness = bases["witness"]
    for _ in range(n):
        new = max(int(p.name) for p in witness.iterdir()) + 1
        staging = witness.with_name(f"witness-staging-{new}")
        shutil.copytree(witness / "1", staging)
        staging.rename(witness / str(new))
        srv.wait_until_available("witness", [new], timeout_s=60)


def test_model_folder_moved_away(setup):
    srv, bases = setup
    base = bases["moved"]
    moved = base.with_name("moved-elsewhere")
    base.rename(moved)
    message = f"Could not find base path {base} for servable moved"
    wait_until(
        lambda: (
            status(srv, "moved")["model_version_status"][0]["status"]["error_message"] == message
        ),
        timeout_s=30,
        what="the missing base path in status",
    )
    log_line = wait_until(
        lambda: [ln for ln in srv.logs().splitlines() if message in ln],
        timeout_s=30,
        what="the missing base path in the log",
    )
    assert len(log_line) == 1 and "keep serving" in log_line[0]  # logged once, not every poll
    polls_pass(srv, bases)  # several polls later it still serves, label included
    assert predict(srv, "moved") == (200, {"predictions": [2.5]})
    assert predict(srv, "moved", "/labels/stable") == (200, {"predictions": [2.5]})
    vs = status(srv, "moved")["model_version_status"]
    assert [(v["version"], v["state"], v["status"]["error_code"]) for v in vs] == [
        ("1", "AVAILABLE", "OK")
    ]
    moved.rename(base)
    wait_until(
        lambda: status(srv, "moved")["model_version_status"][0]["status"]["error_message"] == "",
        timeout_s=30,
        what="the notice cleared once the folder is back",
    )


def test_version_folder_replaced_by_a_file(setup):
    srv, bases = setup
    version = bases["filed"] / "1"
    shutil.rmtree(version)
    version.write_text("not a SavedModel folder")
    message = f"version entry {version} is not a directory"
    wait_until(
        lambda: (
            status(srv, "filed")["model_version_status"][0]["status"]["error_message"] == message
        ),
        timeout_s=30,
        what="the bad version entry in status",
    )
    assert message in srv.logs()
    polls_pass(srv, bases)
    assert predict(srv, "filed") == (200, {"predictions": [2.5]})
    assert status(srv, "filed")["model_version_status"][0]["state"] == "AVAILABLE"


def test_reload_to_a_missing_base_path_says_so_and_keeps_serving(setup):
    srv, bases = setup
    missing = bases["reloaded"].with_name("no-such-folder")
    entries = [
        entry(n, b if n != "reloaded" else missing, 'version_labels { key: "stable" value: 1 }')
        for n, b in bases.items()
    ]
    with pytest.raises(grpc.RpcError) as e:
        reload(srv, config(*entries))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == (
        f"Could not find base path {missing} for servable reloaded. The new config was not "
        "applied; the loaded versions keep serving"
    )
    assert predict(srv, "reloaded") == (200, {"predictions": [2.5]})
    assert predict(srv, "reloaded", "/labels/stable") == (200, {"predictions": [2.5]})
    assert status(srv, "reloaded")["model_version_status"][0]["state"] == "AVAILABLE"
