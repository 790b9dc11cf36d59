"""Payload logs under the docker runtime: the router container captures, our agent writes.

Real dockerd, the stand-in `tensorflow/serving` image (whose models.config carries no
logging_config, as the real image needs) behind the router container (stand-in `haproxy`,
host network), and the capture agent as a host process. Records must parse with TF's reader
and upstream's protos, `tfsctl logs --predictions` must read them back with what the client
got, and a dead agent or an unwritable folder must cost no prediction.
"""

from __future__ import annotations

import glob
import json
import os
import signal
from pathlib import Path

import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from orchestrator.protocol.tensors import from_tensor_proto
from orchestrator.router import capture_agent
from orchestrator.runtime.base import free_port
from orchestrator.runtime.docker.api import DockerApi
from tests.helpers.parallel import docker_name
from tests.helpers.requires import require_haproxy
from tests.helpers.rollout import wait_for
from tests.helpers.standin_image import ROUTER_REF, ensure_router_image
from tests.integration.docker.conftest import tfsctl, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.docker]
NAME = docker_name("capture")


def _spec(grpc: int, rest: int, log_path: str) -> str:
    return ("base_path: ../models/hpt\nversion_policy: {specific: [1]}\nreplicas: 2\n"
            f"ports: {{grpc: {grpc}, rest: {rest}}}\nrouter: true\nrouter_image: {ROUTER_REF}\n"
            f"logging: {{sample: 1.0, path: {log_path}, max_mb: 16}}\n")


def _status(root: Path) -> tuple[int, dict]:
    run = tfsctl(root, "status", NAME, "-o", "json")
    return run.returncode, json.loads(run.stdout)


def _capture_row(doc: dict) -> dict:
    (row,) = [r for r in doc["replicas"] if r["id"] == "capture"]
    return row


def test_docker_deployment_logs_through_the_router(project: Path, docker_api: DockerApi) -> None:
    require_haproxy()
    ensure_router_image(docker_api)
    grpc, rest = free_port(), free_port()
    write_spec(project, NAME, _spec(grpc, rest, "../logs"))
    run = tfsctl(project, "deploy", NAME, "--runtime", "docker")
    assert run.returncode == 0, run.stdout + run.stderr
    folder = project / ".tfso" / "deployments" / NAME / "router"
    try:
        # The replicas' config has no logging_config (tensorflow/serving would refuse it).
        assert "logging_config" not in (project / ".tfso" / "deployments" / NAME / "config"
                                        / "models.config").read_text()
        code, doc = _status(project)
        assert code == 0, doc
        assert _capture_row(doc)["running"] and "capture agent pid" in _capture_row(doc)["detail"]
        sent = {}
        with requests.Session() as s:
            for i in range(20):
                r = s.post(f"http://127.0.0.1:{rest}/v1/models/{NAME}:predict",
                           json={"instances": [[float(i)]]}, headers={"X-Request-Id": f"d-{i}"},
                           timeout=30)
                assert r.status_code == 200, r.text
                assert r.headers["X-Request-Id"] == f"d-{i}"
                sent[f"d-{i}"] = (float(i), r.json()["predictions"])
        run = wait_for(lambda: (lambda r: r if r.returncode == 0 and len(json.loads(r.stdout)) == 20
                                else None)(tfsctl(project, "logs", NAME, "--predictions", "-n", "100",
                                                  "-o", "json")),
                       60, "20 logged predictions")
        rows = json.loads(run.stdout)
        assert {r["request_id"] for r in rows} == set(sent)
        for r in rows:
            x, predictions = sent[r["request_id"]]
            assert (r["model"], r["version"], r["signature"], r["kind"]) == (
                NAME, 1, "serving_default", "predict_log")
            assert r["inputs"] == {"x": [[x]]} and r["outputs"] == {"y": predictions}
        files = sorted(glob.glob(str(project / "logs" / f"{NAME}-*.tfrecord")))
        parsed = [prediction_log_pb2.PredictionLog.FromString(raw.numpy())
                  for f in files for raw in tf.data.TFRecordDataset(f)]
        assert len(parsed) == 20
        assert all(from_tensor_proto(p.predict_log.response.outputs["y"]).tolist()
                   == sent[p.log_metadata.request_origin][1] for p in parsed)

        # The agent killed: predictions keep succeeding, the router counts what it lost.
        info = capture_agent.agent_info(folder)
        assert info is not None and info["running"]
        os.kill(int(info["pid"]), signal.SIGKILL)
        wait_for(lambda: not capture_agent.agent_info(folder)["running"], 30, "the agent gone")
        with requests.Session() as s:
            for i in range(15):
                r = s.post(f"http://127.0.0.1:{rest}/v1/models/{NAME}:predict",
                           json={"instances": [[float(i)]]}, timeout=30)
                assert r.status_code == 200 and r.json() == {"predictions": [[0.5 * i + 2.0]]}
        code, doc = _status(project)
        assert code == 1  # the status says logging is down
        row = _capture_row(doc)
        assert not row["running"] and "15 sample(s) the router could not deliver" in row["detail"]
        # `deploy` starts it again (the router container is kept) and it exports the count.
        router_before = [c["id"] for c in json.loads(tfsctl(project, "ps", NAME, "-o", "json").stdout)[
            "replicas"] if c["replica"] == "router"]
        run = tfsctl(project, "deploy", NAME, "--runtime", "docker")
        assert run.returncode == 0, run.stdout + run.stderr
        code, doc = _status(project)
        assert code == 0 and _capture_row(doc)["running"]
        ps = json.loads(tfsctl(project, "ps", NAME, "-o", "json").stdout)["replicas"]
        assert [c["id"] for c in ps if c["replica"] == "router"] == router_before
        assert [c["status"] for c in ps if c["replica"] == "capture"] == ["running"]
        state = json.loads((project / ".tfso" / "deployments" / f"{NAME}.json").read_text())
        page = requests.get(f"http://127.0.0.1:{state['router']['capture_metrics_port']}/metrics",
                            timeout=10).text
        assert f'tfso_prediction_log_dropped_total{{model="{NAME}",reason="not_delivered"}} 15' in page

        # An unwritable log folder (a file in the way: tests run as root) keeps serving.
        (project / "blocked").write_text("not a folder")
        write_spec(project, NAME, _spec(grpc, rest, "../blocked/logs"))
        run = tfsctl(project, "deploy", NAME, "--runtime", "docker")
        assert run.returncode == 0, run.stdout + run.stderr
        with requests.Session() as s:
            for i in range(10):
                r = s.post(f"http://127.0.0.1:{rest}/v1/models/{NAME}:predict",
                           json={"instances": [[float(i)]]}, timeout=30)
                assert r.status_code == 200 and r.json() == {"predictions": [[0.5 * i + 2.0]]}
        metrics = f"http://127.0.0.1:{state['router']['capture_metrics_port']}/metrics"
        wait_for(lambda: 'reason="write_error"} 10' in requests.get(metrics, timeout=10).text, 60,
                 "10 samples counted as write errors")
    finally:
        run = tfsctl(project, "stop", NAME, timeout=120)
    assert run.returncode == 0 and "capture agent" in run.stdout, run.stdout + run.stderr
    assert capture_agent.agent_info(folder) is None


def test_logging_without_a_router_is_refused_with_the_fix(project: Path) -> None:
    name = docker_name("capnr")
    write_spec(project, name, "base_path: ../models/hpt\nlogging: {sample: 0.5, path: ../logs}\n")
    run = tfsctl(project, "deploy", name, "--runtime", "docker")
    assert run.returncode != 0
    assert "router: true" in run.stderr + run.stdout and "payload logging" in run.stderr + run.stdout


def test_max_drift_gate_rolls_back_a_docker_canary_that_answers_differently(
        project: Path, docker_api: DockerApi) -> None:
    """The router logs which version answered (versions.map: stable 1, canary 2), so the rollout
    gate compares their outputs on docker as on the local runtime (hpt/2 is y = 0.5x + 3)."""
    from tests.helpers.rollout import rollout_status
    from tests.integration.rollout.test_rollout_gates_local import VariedLoad

    require_haproxy()
    ensure_router_image(docker_api)
    name = docker_name("capgate")
    grpc, rest = free_port(), free_port()
    write_spec(project, name, "base_path: ../models/hpt\nversion_policy: {specific: [1]}\n"
               f"ports: {{grpc: {grpc}, rest: {rest}}}\nrouter: true\nrouter_image: {ROUTER_REF}\n"
               "logging: {sample: 1.0, path: ../gate-logs, max_mb: 64}\n")
    run = tfsctl(project, "deploy", name, "--runtime", "docker")
    assert run.returncode == 0, run.stdout + run.stderr
    try:
        with VariedLoad(f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc}", model=name) as load:
            wait_for(lambda: len(load.records) > 50, 60, "load to start")
            run = tfsctl(project, "rollout", "start", name, "--version", "2", "--steps", "25,50,100",
                         "--interval", "2s", "--min-requests", "10", "--threshold", "2",
                         "--max-drift", "0.25", "--min-output-rows", "100", timeout=400)
            after = len(load.records)
            wait_for(lambda: len(load.records) > after + 50, 60, "requests after the rollback")
        assert run.returncode == 1, run.stdout + run.stderr
        assert load.failures() == [], load.failures()[:5]
        status = rollout_status(project, name)
        assert status["phase"] == "failed" and "output drift PSI" in status["message"], status["message"]
        failed = [h for h in status["history"] if h["decision"] in ("check failed", "roll back")]
        assert len(failed) == 2 and all(h["drift_psi"] > 0.25 and h["error_rate"] == 0 for h in failed)
        assert any(r[1] == 3.0 for r in load.records)  # the canary did answer clients
        assert {r[1] for r in load.records[after:]} == {2.0}
    finally:
        tfsctl(project, "rollout", "abort", name, timeout=120)
        tfsctl(project, "stop", name, timeout=120)
