"""`tfsctl` verbs on a kubernetes deployment, in subprocesses against the emulated cluster
(README: Kubernetes, tier 2; the harness: kube_env.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.requires import require_module

require_module("kubernetes")

from tests.integration.kube.kube_env import NS, Env  # noqa: E402

pytestmark = pytest.mark.timeout(420)




def test_cli_deploy_status_ls_stop_and_a_local_only_spec(env: Env, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "khp.yaml").write_text(f"model_uri: pvc://model-store/khp\nbase_path: {env.store / 'khp'}\n"
                                      "version_policy: {specific: [1]}\nhealth: {deadline_s: 180}\n"
                                      "autoscale: {min: 1, max: 2}\nresources: {cpus: 0.5}\n")
    (configs / "plain.yaml").write_text(f"base_path: {env.store / 'khp'}\n")
    run_env = {**os.environ, "KUBECONFIG": env.runtime.kubeconfig or "", "TFSO_STATE_DIR": str(tmp_path / "cli")}

    def tfsctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                              timeout=240, check=False, env=run_env, cwd=tmp_path)

    deployed = tfsctl("deploy", "khp", "--runtime", "kubernetes", "--namespace", NS, "--configs-dir", str(configs),
                      "-o", "json")
    assert deployed.returncode == 0, deployed.stderr
    assert json.loads(deployed.stdout)["action"] == "created"
    status = tfsctl("status", "khp")
    assert status.returncode == 0 and "AVAILABLE" in status.stdout, status.stdout + status.stderr
    moved = tfsctl("deploy", "khp", "--runtime", "kubernetes", "--configs-dir", str(configs))  # namespace default
    assert moved.returncode == 4 and "is deployed in namespace models, not default" in moved.stderr, moved.stderr
    # reload finds it where it lives (the spec file names no namespace); autoscale is fine on a cluster
    reloaded = tfsctl("reload", "khp", "--configs-dir", str(configs), "-o", "json")
    assert reloaded.returncode == 0 and json.loads(reloaded.stdout)["action"] == "unchanged", reloaded.stderr
    scaled = tfsctl("scale", "khp", "3")
    assert scaled.returncode == 4 and "is autoscaled" in scaled.stderr and "fix:" in scaled.stderr
    listed = json.loads(tfsctl("ls", "-o", "json").stdout)["deployments"]
    assert [(d["name"], d["runtime"]) for d in listed] == [("khp", "kubernetes")]
    assert tfsctl("stop", "khp").returncode == 0
    refused = tfsctl("deploy", "plain", "--runtime", "kubernetes", "--configs-dir", str(configs))
    assert refused.returncode == 2 and "error:" in refused.stderr and "model_uri" in refused.stderr
    assert "tfsctl package plain" in refused.stderr
    misuse = tfsctl("deploy", "plain", "--runtime", "local", "--namespace", NS, "--configs-dir", str(configs))
    assert misuse.returncode == 2 and "--namespace go with --runtime kubernetes" in misuse.stderr
