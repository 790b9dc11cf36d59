"""The local runtime end to end through `tfsctl`: real server processes on loopback ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from orchestrator.runtime.base import free_port
from tests.helpers.launcher import without_launcher
from tests.helpers.models import half_plus_two_tf1
from tests.helpers.requires import require_haproxy

pytestmark = pytest.mark.integration


def tfsctl(workdir: Path, *args: str, timeout: float = 180,
           launcher: bool = True) -> subprocess.CompletedProcess[str]:
    """launcher=False: servers are executed, so /proc shows their own command lines."""
    env = dict(os.environ) if launcher else without_launcher()
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=workdir,
                          capture_output=True, text=True, timeout=timeout,
                          env={**env, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory):
    """A project folder: models/hpt/{1,2} (TF1 half_plus_two, then half_plus_three) and a spec."""
    root = tmp_path_factory.mktemp("project")
    half_plus_two_tf1(root / "models" / "hpt" / "1")
    half_plus_two_tf1(root / "models" / "hpt" / "2", b=3.0)
    (root / "serving_configs").mkdir()
    yield root
    for state in (root / ".tfso" / "deployments").glob("*.json"):
        tfsctl(root, "stop", state.stem, timeout=60)


def write_spec(root: Path, name: str, text: str) -> None:
    (root / "serving_configs" / f"{name}.yaml").write_text(text)


def predict(rest: str, model: str, body: dict, suffix: str = "") -> requests.Response:
    return requests.post(f"{rest}/v1/models/{model}{suffix}:predict", json=body, timeout=30)


def test_deploy_predict_reload_status_stop(workdir: Path) -> None:
    grpc, rest = free_port(), free_port()
    write_spec(workdir, "hpt", f"base_path: ../models/hpt\nversion_policy: {{specific: [1]}}\n"
                               f"ports: {{grpc: {grpc}, rest: {rest}}}\n")
    run = tfsctl(workdir, "deploy", "hpt", "--runtime", "local", "-o", "json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["action"] == "created" and info["rest_url"] == f"http://127.0.0.1:{rest}"
    url = info["rest_url"]
    assert predict(url, "hpt", {"instances": [1.0, 2.0, 5.0]}).json() == {"predictions": [2.5, 3.0, 4.5]}
    pid = info["replicas"][0]["pid"]

    # Same spec again: nothing changes.
    again = json.loads(tfsctl(workdir, "deploy", "hpt", "--runtime", "local", "-o", "json").stdout)
    assert again["action"] == "unchanged" and again["replicas"][0]["pid"] == pid

    # New versions and a label: hot-reloaded into the same process.
    write_spec(workdir, "hpt", f"base_path: ../models/hpt\nversion_policy: all\nversion_labels: {{stable: 1}}\n"
                               f"ports: {{grpc: {grpc}, rest: {rest}}}\n")
    run = tfsctl(workdir, "reload", "hpt", "-o", "json")
    assert run.returncode == 0, run.stderr
    reloaded = json.loads(run.stdout)
    assert reloaded["action"] == "reloaded" and reloaded["replicas"][0]["pid"] == pid
    assert predict(url, "hpt", {"instances": [1.0]}, "/versions/2").json() == {"predictions": [3.5]}
    assert predict(url, "hpt", {"instances": [1.0]}, "/labels/stable").json() == {"predictions": [2.5]}

    run = tfsctl(workdir, "status", "hpt", "-o", "json")
    assert run.returncode == 0, run.stderr
    states = {(m["model"], v["version"]): v["state"]
              for r in json.loads(run.stdout)["replicas"] for m in r["models"] for v in m["versions"]}
    assert states == {("hpt", 1): "AVAILABLE", ("hpt", 2): "AVAILABLE"}
    table = tfsctl(workdir, "status", "hpt")
    assert "AVAILABLE" in table.stdout

    assert "replica 0" in tfsctl(workdir, "logs", "hpt").stdout
    listed = json.loads(tfsctl(workdir, "ls", "-o", "json").stdout)["deployments"]
    assert {"name": "hpt", "runtime": "local", "models": ["hpt"], "replicas": 1, "router": False,
            "rest_url": url, "grpc_address": f"127.0.0.1:{grpc}"} in listed

    run = tfsctl(workdir, "stop", "hpt")
    assert run.returncode == 0, run.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/v1/models/hpt", timeout=5)
    assert not (workdir / ".tfso" / "deployments" / "hpt.json").exists()


def test_corrupt_saved_model_is_refused_before_any_reload(workdir: Path) -> None:
    """The pre-check (exit 3, a model problem): nothing is sent to the server, it keeps serving."""
    grpc, rest = free_port(), free_port()
    write_spec(workdir, "keep", f"base_path: ../models/hpt\nversion_policy: {{specific: [1]}}\n"
                                f"ports: {{grpc: {grpc}, rest: {rest}}}\nhealth: {{deadline_s: 120}}\n")
    assert tfsctl(workdir, "deploy", "keep", "--runtime", "local").returncode == 0
    broken = workdir / "models" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "saved_model.pb").write_bytes(b"garbage")
    write_spec(workdir, "keep", f"base_path: ../models/broken\nports: {{grpc: {grpc}, rest: {rest}}}\n"
                                "health: {deadline_s: 120}\n")
    run = tfsctl(workdir, "reload", "keep")
    assert run.returncode == 3, run.stderr
    assert "cannot be served" in run.stderr and "Traceback" not in run.stderr
    url = f"http://127.0.0.1:{rest}"
    assert predict(url, "keep", {"instances": [1.0]}).json() == {"predictions": [2.5]}
    tfsctl(workdir, "stop", "keep")


def test_version_failing_in_the_loader_puts_the_previous_config_back(workdir: Path) -> None:
    """Past every pre-check: the server is sent the new config, TensorFlow fails to restore the
    new version's variables, and the runtime must put the old models.config back on disk and in
    the server. Version 1 alone would survive either way (a failed load does not unload the last
    AVAILABLE version), so the label is the witness: the new config drops it, the old one has it."""
    from tests.helpers.models import half_plus_two_unloadable

    base = workdir / "models" / "putback"
    half_plus_two_tf1(base / "1")
    half_plus_two_unloadable(base / "3")
    grpc, rest = free_port(), free_port()
    old_spec = (f"base_path: ../models/putback\nversion_policy: {{specific: [1]}}\n"
                "version_labels: {stable: 1}\n"
                f"ports: {{grpc: {grpc}, rest: {rest}}}\nhealth: {{deadline_s: 60}}\n")
    write_spec(workdir, "putback", old_spec)
    run = tfsctl(workdir, "deploy", "putback", "--runtime", "local", "-o", "json")
    assert run.returncode == 0, run.stderr
    pid = json.loads(run.stdout)["replicas"][0]["pid"]
    config = workdir / ".tfso" / "deployments" / "putback" / "config" / "models.config"
    old_config = config.read_text()
    assert "versions: 1" in old_config

    write_spec(workdir, "putback", old_spec.replace("specific: [1]", "specific: [3]")
                                           .replace("version_labels: {stable: 1}\n", ""))
    run = tfsctl(workdir, "reload", "putback")
    assert run.returncode == 4, (run.returncode, run.stderr)  # a runtime problem, not the pre-check
    assert "failed to load" in run.stderr and "Traceback" not in run.stderr

    assert config.read_text() == old_config
    url = f"http://127.0.0.1:{rest}"
    states = {int(v["version"]): v["state"]
              for v in requests.get(f"{url}/v1/models/putback", timeout=10).json()["model_version_status"]}
    assert states.get(1) == "AVAILABLE", states
    assert predict(url, "putback", {"instances": [1.0]}).json() == {"predictions": [2.5]}
    assert predict(url, "putback", {"instances": [1.0]}, "/labels/stable").json() == {"predictions": [2.5]}
    status = json.loads(tfsctl(workdir, "status", "putback", "-o", "json").stdout)
    assert status["replicas"][0]["id"] == str(pid), "put back in place, not by a restart"
    # The state still records the old config: the old spec again is "unchanged".
    write_spec(workdir, "putback", old_spec)
    again = json.loads(tfsctl(workdir, "deploy", "putback", "--runtime", "local", "-o", "json").stdout)
    assert again["action"] == "unchanged"
    tfsctl(workdir, "stop", "putback")


def test_port_in_use_is_a_clear_error(workdir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        write_spec(workdir, "busy", f"base_path: ../models/hpt\nports: {{grpc: {free_port()}, rest: {port}}}\n")
        run = tfsctl(workdir, "deploy", "busy", "--runtime", "local")
    assert run.returncode == 4
    assert f"REST port {port}" in run.stderr and "already in use" in run.stderr and "fix:" in run.stderr


def test_missing_model_path_fails_before_starting(workdir: Path) -> None:
    write_spec(workdir, "ghost", "base_path: ../models/ghost\n")
    run = tfsctl(workdir, "deploy", "ghost", "--runtime", "local")
    assert run.returncode == 2 and "does not exist" in run.stderr


def test_killed_server_is_reported_and_redeploy_recovers(workdir: Path) -> None:
    grpc, rest = free_port(), free_port()
    write_spec(workdir, "crash", f"base_path: ../models/hpt\nports: {{grpc: {grpc}, rest: {rest}}}\n")
    info = json.loads(tfsctl(workdir, "deploy", "crash", "--runtime", "local", "-o", "json").stdout)
    pid = info["replicas"][0]["pid"]
    os.killpg(pid, signal.SIGKILL)
    run = tfsctl(workdir, "status", "crash", "-o", "json")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert json.loads(run.stdout)["replicas"][0]["running"] is False
    run = tfsctl(workdir, "deploy", "crash", "--runtime", "local", "-o", "json")
    assert run.returncode == 0, run.stderr
    again = json.loads(run.stdout)
    assert "stale pid" in again["note"] and again["replicas"][0]["pid"] != pid
    assert predict(again["rest_url"], "crash", {"instances": [1.0]}).json() == {"predictions": [3.5]}
    tfsctl(workdir, "stop", "crash")


def test_unknown_deployment(workdir: Path) -> None:
    run = tfsctl(workdir, "status", "nothing")
    assert run.returncode == 4 and "no deployment named 'nothing'" in run.stderr


def test_router_in_front_of_two_replicas_survives_its_own_crash(workdir: Path) -> None:
    require_haproxy()
    grpc, rest = free_port(), free_port()
    write_spec(workdir, "routed", f"base_path: ../models/hpt\nrouter: true\nreplicas: 2\n"
                                  f"ports: {{grpc: {grpc}, rest: {rest}}}\n")
    run = tfsctl(workdir, "deploy", "routed", "--runtime", "local", "-o", "json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert {r["rest_port"] for r in info["replicas"]}.isdisjoint({rest}), "replicas sit behind the router"
    from orchestrator.client import GrpcClient

    with GrpcClient(f"127.0.0.1:{grpc}") as client:  # gRPC (h2c) through HAProxy
        assert float(client.predict("routed", {"x": [[1.0]]})["y"][0][0]) == 3.5
    assert predict(info["rest_url"], "routed", {"instances": [1.0]}).json() == {"predictions": [3.5]}

    router_pid = int((workdir / ".tfso" / "deployments" / "routed" / "router" / "haproxy.pid").read_text())
    os.killpg(router_pid, signal.SIGKILL)
    status = tfsctl(workdir, "status", "routed", "-o", "json")
    assert status.returncode == 1 and any(r["index"] == -1 and not r["running"]
                                          for r in json.loads(status.stdout)["replicas"])
    assert "==> router <==" in tfsctl(workdir, "logs", "routed").stdout
    run = tfsctl(workdir, "deploy", "routed", "--runtime", "local", "-o", "json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["replicas"][0]["pid"] == info["replicas"][0]["pid"], "replicas kept"
    assert predict(info["rest_url"], "routed", {"instances": [1.0]}).json() == {"predictions": [3.5]}
    assert tfsctl(workdir, "status", "routed").returncode == 0
    tfsctl(workdir, "stop", "routed")


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_changed_flags_replace_the_replicas(workdir: Path) -> None:
    """A spec change that changes server flags cannot be hot-reloaded: the process is replaced
    and the new one runs with the new flag."""
    grpc, rest = free_port(), free_port()
    spec = f"base_path: ../models/hpt\nversion_policy: {{specific: [1]}}\nports: {{grpc: {grpc}, rest: {rest}}}\n"
    write_spec(workdir, "flags", spec)
    first = json.loads(tfsctl(workdir, "deploy", "flags", "--runtime", "local", "-o", "json",
                              launcher=False).stdout)
    old_pid = first["replicas"][0]["pid"]
    assert not any(a.startswith("--tensorflow_intra_op_parallelism") for a in _cmdline(old_pid))
    write_spec(workdir, "flags", spec + "threads: {intra_op: 1}\n")
    run = tfsctl(workdir, "deploy", "flags", "--runtime", "local", "-o", "json", launcher=False)
    assert run.returncode == 0, run.stderr
    second = json.loads(run.stdout)
    new_pid = second["replicas"][0]["pid"]
    assert new_pid != old_pid and "replicas replaced" in second["note"]
    assert "--tensorflow_intra_op_parallelism=1" in _cmdline(new_pid)
    assert not Path(f"/proc/{old_pid}").exists() or Path(f"/proc/{old_pid}/stat").read_text().split()[2] == "Z"
    assert predict(second["rest_url"], "flags", {"instances": [1.0]}).json() == {"predictions": [2.5]}
    tfsctl(workdir, "stop", "flags")


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def test_onednn_reaches_the_server_process_and_a_change_replaces_it(workdir: Path) -> None:
    """`onednn: false` is TF_ENABLE_ONEDNN_OPTS=0 in the server's own environment (read from
    /proc), which TensorFlow reads when it loads, so turning it back on needs a new process."""
    grpc, rest = free_port(), free_port()
    spec = f"base_path: ../models/hpt\nversion_policy: {{specific: [1]}}\nports: {{grpc: {grpc}, rest: {rest}}}\n"
    write_spec(workdir, "dnn", spec + "onednn: false\n")
    first = json.loads(tfsctl(workdir, "deploy", "dnn", "--runtime", "local", "-o", "json").stdout)
    old_pid = first["replicas"][0]["pid"]
    assert _environ(old_pid).get("TF_ENABLE_ONEDNN_OPTS") == "0"
    assert predict(first["rest_url"], "dnn", {"instances": [1.0]}).json() == {"predictions": [2.5]}
    write_spec(workdir, "dnn", spec + "onednn: true\n")
    run = tfsctl(workdir, "deploy", "dnn", "--runtime", "local", "-o", "json")
    assert run.returncode == 0, run.stderr
    second = json.loads(run.stdout)
    new_pid = second["replicas"][0]["pid"]
    assert new_pid != old_pid and "replicas replaced" in second["note"]
    assert _environ(new_pid).get("TF_ENABLE_ONEDNN_OPTS") == "1"
    assert predict(second["rest_url"], "dnn", {"instances": [1.0]}).json() == {"predictions": [2.5]}
    tfsctl(workdir, "stop", "dnn")


def test_a_reused_pid_is_reported_as_exited_and_never_signalled(workdir: Path) -> None:
    """The state's pid now belongs to another live process (as when the kernel reuses a pid
    after a crash; simulated by pointing the state at one): status says the replica exited,
    and deploy starts a new replica without signalling that process."""
    grpc, rest = free_port(), free_port()
    write_spec(workdir, "reuse", f"base_path: ../models/hpt\nports: {{grpc: {grpc}, rest: {rest}}}\n")
    info = json.loads(tfsctl(workdir, "deploy", "reuse", "--runtime", "local", "-o", "json").stdout)
    server_pid = info["replicas"][0]["pid"]
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        os.killpg(server_pid, signal.SIGKILL)  # the server crashes...
        state_file = workdir / ".tfso" / "deployments" / "reuse.json"
        state = json.loads(state_file.read_text())
        state["replicas"][0]["pid"] = stranger.pid  # ...and its pid now names another process
        state_file.write_text(json.dumps(state))

        run = tfsctl(workdir, "status", "reuse", "-o", "json")
        assert run.returncode == 1 and "Traceback" not in run.stderr
        assert json.loads(run.stdout)["replicas"][0]["running"] is False
        run = tfsctl(workdir, "deploy", "reuse", "--runtime", "local", "-o", "json")
        assert run.returncode == 0, run.stderr
        again = json.loads(run.stdout)
        assert f"stale pid {stranger.pid}" in again["note"]
        assert stranger.poll() is None, "the process that reused the pid was signalled"
        assert predict(again["rest_url"], "reuse", {"instances": [1.0]}).json() == {"predictions": [3.5]}
        assert tfsctl(workdir, "stop", "reuse").returncode == 0
        assert stranger.poll() is None, "stop signalled a process that is not ours"
    finally:
        stranger.kill()
        stranger.wait()


def _worker_children(pid: int) -> list[int]:
    """The replica's worker processes: its children started with TFS_WORKER set."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:  # exited meanwhile
                continue
            if any(v.startswith(b"TFS_WORKER=") for v in env):
                found.append(int(child))
    return sorted(found)


def test_workers_field_runs_that_many_worker_processes(workdir: Path) -> None:
    """`workers: 2` renders --rest_api_num_threads=2: the replica is a supervisor with two
    worker processes (one per CPU at most), both serve, and stop ends them all."""
    grpc, rest = free_port(), free_port()
    write_spec(workdir, "wk", f"base_path: ../models/hpt\nversion_policy: {{specific: [1]}}\nworkers: 2\n"
                              f"ports: {{grpc: {grpc}, rest: {rest}}}\n")
    run = tfsctl(workdir, "deploy", "wk", "--runtime", "local", "-o", "json", launcher=False)
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    pid = info["replicas"][0]["pid"]
    assert "--rest_api_num_threads=2" in _cmdline(pid)
    expected = min(2, os.cpu_count() or 1)
    log = workdir / ".tfso" / "deployments" / "wk" / "logs" / "replica-0.log"
    deadline = time.monotonic() + 180
    while f"Serving with {expected} worker processes" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no 'Serving with {expected} worker processes' in {log}"
        time.sleep(0.2)
    workers = _worker_children(pid)
    assert len(workers) == expected, workers
    for _ in range(8):  # several connections: the kernel spreads them over the workers
        assert predict(info["rest_url"], "wk", {"instances": [1.0]}).json() == {"predictions": [2.5]}
    assert tfsctl(workdir, "stop", "wk").returncode == 0
    assert not any(Path(f"/proc/{w}").exists() and Path(f"/proc/{w}/stat").read_text().split()[2] != "Z"
                   for w in workers), "every worker stopped with the replica"
