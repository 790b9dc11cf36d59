"""`tfsctl rollout start` on a cluster deployment reads versions from model_uri, not this machine.

No cluster can run here and none is needed: the check under test happens before the CLI
connects. With no kubeconfig, the run must get past the local-folder check and stop at the
cluster connection, named with its fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.errors import RolloutError, RuntimeFailure, SpecError
from orchestrator.runtime.kubernetes import spec_to_state
from orchestrator.spec import load_spec
from orchestrator.state import StateStore


def test_rollout_on_a_cluster_does_not_look_for_local_version_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFSO_STATE_DIR", str(tmp_path / ".tfso"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "serving_configs" / "kr.yaml").write_text(
        "model_uri: gs://bucket/models/kr\nbase_path: ../models/kr\nversion_policy: {specific: [1]}\n"
        "router: true\nmonitoring: {prometheus: true}\n")
    spec = load_spec("kr", check_files=False)
    StateStore().save("kr", {"name": "kr", "runtime": "kubernetes", "namespace": "default", "object": "kr",
                             "router": True, "spec": spec_to_state(spec)})
    result = CliRunner().invoke(cli, ["rollout", "start", "kr", "--version", "2"])
    assert isinstance(result.exception, RuntimeFailure), result.exception
    assert "no kubeconfig" in str(result.exception) and "fix:" in str(result.exception)

    # The same spec on this machine is still checked against its version folders.
    StateStore().save("kr", {"name": "kr", "runtime": "local"})
    result = CliRunner().invoke(cli, ["rollout", "start", "kr", "--version", "2"])
    assert isinstance(result.exception, SpecError) and "does not exist" in str(result.exception)


@pytest.mark.parametrize(("flags", "refused"), [
    (["--mode", "labels"], "--mode labels is not available on the kubernetes runtime"),
    (["--mode", "shadow"], "--mode shadow is not available on the kubernetes runtime"),
    (["--metrics", "replicas"], "--metrics replicas is not available on the kubernetes runtime"),
    (["--metrics", "prometheus"], "--metrics prometheus is not available on the kubernetes runtime"),
])
def test_rollout_options_a_cluster_cannot_honour_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], refused: str) -> None:
    """Refused before the cluster is even reached (no kubeconfig here), so nothing changes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFSO_STATE_DIR", str(tmp_path / ".tfso"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "serving_configs" / "kr.yaml").write_text(
        "model_uri: gs://bucket/models/kr\nversion_policy: {specific: [1]}\nrouter: true\n")
    spec = load_spec("kr", check_files=False)
    StateStore().save("kr", {"name": "kr", "runtime": "kubernetes", "namespace": "default", "object": "kr",
                             "router": True, "spec": spec_to_state(spec)})
    result = CliRunner().invoke(cli, ["rollout", "start", "kr", "--version", "2", *flags])
    assert isinstance(result.exception, RolloutError), result.exception
    assert refused in result.exception.message and result.exception.fix
    assert not (tmp_path / ".tfso" / "rollouts" / "kr.json").exists()


def test_rollout_with_a_prometheus_url_that_does_not_answer_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before any canary starts (and before the cluster is reached)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFSO_STATE_DIR", str(tmp_path / ".tfso"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "serving_configs" / "kr.yaml").write_text(
        "model_uri: gs://bucket/models/kr\nversion_policy: {specific: [1]}\nrouter: true\n"
        f"monitoring: {{prometheus_url: 'http://127.0.0.1:{port}'}}\n")
    spec = load_spec("kr", check_files=False)
    StateStore().save("kr", {"name": "kr", "runtime": "kubernetes", "namespace": "default", "object": "kr",
                             "router": True, "spec": spec_to_state(spec)})
    result = CliRunner().invoke(cli, ["rollout", "start", "kr", "--version", "2"])
    assert isinstance(result.exception, RolloutError), result.exception
    assert f"http://127.0.0.1:{port}" in result.exception.message
    assert "does not answer" in result.exception.message and "prometheus_url" in (result.exception.fix or "")
