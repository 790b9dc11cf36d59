"""`tfsctl monitor`: a real Prometheus scrapes real replicas and the real HAProxy router.

PromQL through Prometheus's HTTP API must give back the numbers the test's load produced: request
counts exactly, latency quantiles inside the histogram bucket the replicas' own pages put them
in. An alert fires when the test breaks the model (a reload to a version that fails every
request) and clears once the good version is back. Scrape and evaluation intervals are short;
every wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from orchestrator.runtime.base import free_port
from tests.helpers.rollout import Load, build_models, rollout_status, start_args, tfsctl, wait_for

pytestmark = pytest.mark.integration
MODEL = "mon"
PATH = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("prometheus") is None or shutil.which("haproxy") is None:
        pytest.fail("prometheus and haproxy are needed: `make system` installs them")
    root = tmp_path_factory.mktemp("monitor")
    build_models(root / "models" / MODEL)
    (root / "serving_configs").mkdir()
    return root


def write_spec(root: Path, version: int, grpc: int, rest: int) -> None:
    (root / "serving_configs" / f"{MODEL}.yaml").write_text(
        f"base_path: ../models/{MODEL}\nversion_policy: {{specific: [{version}]}}\n"
        f"router: true\nreplicas: 2\nports: {{grpc: {grpc}, rest: {rest}}}\n"
    )


@pytest.fixture(scope="module")
def deployed(project: Path) -> Iterator[dict[str, Any]]:
    grpc, rest, prom = free_port(), free_port(), free_port()
    write_spec(project, 1, grpc, rest)
    run = tfsctl(project, "deploy", MODEL, "--runtime", "local")
    assert run.returncode == 0, run.stderr
    try:
        run = tfsctl(project, "monitor", "up", MODEL, "--port", str(prom), "--window", "4s",
                     "--scrape-interval", "0.5", "--eval-interval", "0.5", "--for", "1",
                     "--error-ratio", "0.2")
        assert run.returncode == 0, run.stderr + run.stdout
        yield {"root": project, "rest": f"http://127.0.0.1:{rest}", "grpc": grpc, "rest_port": rest,
               "prom": f"http://127.0.0.1:{prom}"}
    finally:
        tfsctl(project, "monitor", "down", MODEL, timeout=60)
        tfsctl(project, "stop", MODEL, timeout=60)


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    body = requests.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(prom: str, expr: str) -> float | None:
    result = query(prom, expr)
    return float(result[0]["value"][1]) if result else None


def firing(prom: str, name: str) -> list[dict[str, Any]]:
    alerts = requests.get(f"{prom}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def replica_ports(root: Path) -> list[int]:
    state = json.loads((root / ".tfso" / "deployments" / f"{MODEL}.json").read_text())
    return [r["rest_port"] for r in state["replicas"]]


def test_status_shows_every_target_up(deployed: dict[str, Any]) -> None:
    root = deployed["root"]

    def all_up() -> list[dict[str, Any]] | None:
        run = tfsctl(root, "monitor", "status", MODEL, "-o", "json")
        assert run.returncode == 0, run.stderr
        targets = json.loads(run.stdout)["targets"]
        ok = len(targets) == 3 and all(t["health"] == "up" for t in targets)
        return targets if ok else None

    targets = wait_for(all_up, 30, "2 replicas and the router up in Prometheus")
    assert sorted(t["role"] for t in targets) == ["router", "stable", "stable"]
    folder = root / ".tfso" / "monitor" / MODEL
    for name in ("prometheus.yml", "rules.yml", "replicas.json", "router.json"):
        assert (folder / name).is_file()
    assert (folder / "data").is_dir()


def test_promql_gives_back_the_load(deployed: dict[str, Any]) -> None:
    prom, rest = deployed["prom"], deployed["rest"]
    n_rest, n_grpc = 40, 24
    for i in range(n_rest):
        r = requests.post(f"{rest}/v1/models/{MODEL}:predict",
                          json={"instances": [[float(i)]]}, timeout=30)
        assert r.status_code == 200, r.text
    with grpc.insecure_channel(f"127.0.0.1:{deployed['grpc']}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for i in range(n_grpc):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = MODEL
            req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray([[float(i)]], np.float32)))
            stub.Predict(req, timeout=30)

    # Counts are exact: what the replicas counted, summed over both, and what the router counted.
    for protocol, n in (("rest", n_rest), ("grpc", n_grpc)):
        expr = f'sum(tfso_requests_total{{model="{MODEL}",version="1",protocol="{protocol}"}})'
        wait_for(lambda e=expr, n=n: scalar(prom, e) == n, 20, f"{expr} == {n}")
    wait_for(lambda: scalar(prom, 'haproxy_backend_http_requests_total{proxy="rest_pool"}')
             == n_rest, 20, f"router rest_pool requests == {n_rest}")
    wait_for(lambda: scalar(prom, 'haproxy_backend_http_requests_total{proxy="grpc_pool"}')
             == n_grpc, 20, f"router grpc_pool requests == {n_grpc}")
    by_replica = query(prom, f'tfso_requests_total{{model="{MODEL}",protocol="rest"}}')
    assert len(by_replica) == 2 and {r["metric"]["role"] for r in by_replica} == {"stable"}
    assert sum(float(r["value"][1]) for r in by_replica) == n_rest
    assert scalar(prom, f'sum(tfso_request_errors_total{{model="{MODEL}"}})') in (None, 0.0)

    # Quantiles: p99 from Prometheus lies inside the bucket the replicas' own pages put it in.
    buckets: dict[float, float] = {}
    for port in replica_ports(deployed["root"]):
        text = requests.get(f"http://127.0.0.1:{port}{PATH}", timeout=10).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "tfso_request_duration_seconds_bucket" and s.labels["version"] == "1":
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    assert total == n_rest + n_grpc
    upper = next(b for b in bounds if buckets[b] >= 0.99 * total)
    lower = max([0.0] + [b for b in bounds if b < upper])
    p99 = scalar(prom, "histogram_quantile(0.99, sum by (le) "
                       f'(tfso_request_duration_seconds_bucket{{model="{MODEL}",version="1"}}))')
    assert p99 is not None and lower <= p99 <= upper, (lower, p99, upper, buckets)
    # The recording rules exist and carry the version.
    wait_for(lambda: query(prom, 'model_version:tfso_request_duration_seconds:p99_rate4s'
                                 f'{{model="{MODEL}",version="1"}}'), 20, "p99 recording rule")
    rule_rps = query(prom, f'model_version:tfso_requests:rate4s{{model="{MODEL}"}}')
    assert rule_rps and rule_rps[0]["metric"]["version"] == "1"


def test_alert_fires_when_model_breaks_and_clears(deployed: dict[str, Any]) -> None:
    root, prom, rest = deployed["root"], deployed["prom"], deployed["rest"]
    stop = threading.Event()
    codes: list[int] = []

    def load() -> None:
        while not stop.is_set():
            try:
                r = requests.post(f"{rest}/v1/models/{MODEL}:predict",
                                  json={"instances": [[1.0]]}, timeout=10)
                codes.append(r.status_code)
            except requests.RequestException:
                codes.append(0)
            stop.wait(0.02)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        assert not firing(prom, "TfsoErrorRatioHigh")
        write_spec(root, 3, deployed["grpc"], deployed["rest_port"])  # version 3 fails every call
        run = tfsctl(root, "deploy", MODEL)
        assert run.returncode == 0, run.stderr
        alerts = wait_for(lambda: firing(prom, "TfsoErrorRatioHigh"), 60,
                          "TfsoErrorRatioHigh firing")
        assert {a["labels"]["version"] for a in alerts} == {"3"}
        assert any(c >= 500 or c == 400 for c in codes)
        write_spec(root, 1, deployed["grpc"], deployed["rest_port"])
        run = tfsctl(root, "deploy", MODEL)
        assert run.returncode == 0, run.stderr
        wait_for(lambda: not firing(prom, "TfsoErrorRatioHigh"), 60, "TfsoErrorRatioHigh cleared")
    finally:
        stop.set()
        worker.join(15)


def test_dashboard_queries_answer(deployed: dict[str, Any]) -> None:
    root, prom = deployed["root"], deployed["prom"]
    run = tfsctl(root, "monitor", "dashboard", MODEL, "--out", "board.json")
    assert run.returncode == 0, run.stderr
    board = json.loads((root / "board.json").read_text())
    answered = {}
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$model", MODEL).replace("$version", ".*")
            answered[(panel["title"], target["refId"])] = query(prom, expr)
    assert answered[("Requests per second", "A")], "rps panel has no series"
    assert answered[("Latency percentiles", "C")], "p99 panel has no series"
    assert answered[("Router requests per second", "A")], "router panel has no series"


def test_rollout_metrics_prometheus_equals_replicas(deployed: dict[str, Any]) -> None:
    """`rollout --metrics prometheus` and `--metrics replicas` see the same windows per version."""
    from orchestrator.monitor.versions import reader_for
    from orchestrator.rollout.analysis import analyse
    from orchestrator.rollout.target import window
    from orchestrator.state import StateStore

    store = StateStore(deployed["root"] / ".tfso")
    direct = reader_for("replicas", MODEL, MODEL, 1, 3, store=store)
    prom = reader_for("prometheus", MODEL, MODEL, 1, 3, store=store)

    def agreed() -> tuple[dict, dict] | None:
        a, b = direct.sample(), prom.sample()
        return (a, b) if a == b else None

    before, _ = wait_for(agreed, 20, "Prometheus caught up with the replicas")
    assert before["canary"].errors > 0  # version 3's failures from the alert test
    for i in range(30):
        assert requests.post(f"{deployed['rest']}/v1/models/{MODEL}:predict",
                             json={"instances": [[float(i)]]}, timeout=30).ok
    after_direct, after_prom = wait_for(
        lambda: (lambda r: r if r and r[0]["stable"].requests == before["stable"].requests + 30
                 else None)(agreed()), 20, "both sources counting the 30 new requests")
    results = []
    for after in (after_direct, after_prom):
        stable = window(after["stable"], before["stable"])
        canary = window(after["canary"], before["canary"])
        results.append((stable, canary, analyse(canary, stable, max_error_rate=0.01,
                                                max_latency_p99_ms=1000, min_requests=10)))
    assert results[0] == results[1]
    stable, canary, verdict = results[0]
    assert (stable.requests, stable.errors) == (30, 0) and stable.p99_ms is not None
    assert canary.requests == 0 and verdict.verdict.value == "no_data"


def test_rollout_with_prometheus_metrics_rolls_back_a_bad_canary(deployed: dict[str, Any]) -> None:
    """End to end: the canary is scraped as soon as it starts; its errors, read per version from
    Prometheus, roll the rollout back; stable keeps serving."""
    root = deployed["root"]
    with Load(deployed["rest"], f"127.0.0.1:{deployed['grpc']}", model=MODEL) as load:
        wait_for(lambda: len(load.records) > 30, 30, "load to start")
        run = tfsctl(root, *start_args(MODEL, "3", "50,100", "3s", "--min-requests", "10",
                                       "--threshold", "1", "--metrics", "prometheus"))
    assert run.returncode == 1, run.stdout + run.stderr
    status = rollout_status(root, MODEL)
    assert status["phase"] == "failed" and status["extra"]["metrics"] == "prometheus"
    assert "error rate" in status["message"], status["message"]
    assert not (root / ".tfso" / "deployments" / f"{MODEL}.canary.json").exists()
    targets = json.loads((root / ".tfso" / "monitor" / MODEL / "replicas.json").read_text())
    assert [t["labels"]["role"] for t in targets] == ["stable", "stable"]  # canary gone again
    assert {r[2] for r in load.records if r[2] is not None} <= {1}


def watch(root: Path, source: str) -> list[dict[str, Any]]:
    run = tfsctl(root, "monitor", MODEL, "--once", "--source", source, "-o", "json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["source"] == source
    return doc["rows"]


def test_live_view_from_prometheus_and_direct(deployed: dict[str, Any]) -> None:
    root, rest = deployed["root"], deployed["rest"]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            requests.post(f"{rest}/v1/models/{MODEL}:predict", json={"instances": [[1.0]]},
                          timeout=10)
            stop.wait(0.01)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        for source in ("direct", "prometheus"):
            def busy(s: str = source) -> list[dict[str, Any]] | None:
                rows = [r for r in watch(root, s) if r["version"] == "1"]
                ok = len(rows) == 2 and all(r["up"] and (r["rps"] or 0) > 0 for r in rows)
                return rows if ok else None

            rows = wait_for(busy, 30, f"both replicas serving version 1 in the {source} view")
            assert {r["role"] for r in rows} == {"stable"}
            assert all(r["p99_ms"] is not None and r["p99_ms"] > 0 for r in rows)
            assert all(r["error_ratio"] == 0 for r in rows)
    finally:
        stop.set()
        worker.join(15)
    run = tfsctl(root, "monitor", MODEL, "--once", "--interval", "0.2")  # the table itself
    assert run.returncode == 0 and "stable 0" in run.stdout and "p99 ms" in run.stdout


def test_report_png_and_html(deployed: dict[str, Any]) -> None:
    root = deployed["root"]
    for out in ("report.png", "report.html"):
        run = tfsctl(root, "monitor", "report", MODEL, "--since", "15m", "--out", out)
        assert run.returncode == 0, run.stderr
        data = json.loads((root / f"{out}.json").read_text())
        versions = {s["version"] for s in data["series"] if s["what"] == "rps" and s["points"]}
        assert {"1", "3"} <= versions  # the broken version's traffic is in the picture too
        assert {"p50", "p95", "p99", "error_ratio"} <= {s["what"] for s in data["series"]}
        assert [e["what"] for e in data["events"]].count("deploy: reloaded") == 2
        assert any(e["what"].startswith("rollout start v1→v3") for e in data["events"])
        assert any(e["what"] == "rollout failed" for e in data["events"])
    assert (root / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (root / "report.html").read_text()
    assert "data:image/png;base64," in page and "deploy: reloaded" in page
    run = tfsctl(root, "monitor", "report", MODEL, "--out", "report.pdf")
    assert run.returncode != 0 and ".png or an .html" in run.stderr


def test_vanished_replica_shows_down_and_alerts(deployed: dict[str, Any]) -> None:
    root, prom = deployed["root"], deployed["prom"]
    state = json.loads((root / ".tfso" / "deployments" / f"{MODEL}.json").read_text())
    victim = state["replicas"][1]
    os.killpg(victim["pid"], signal.SIGKILL)
    for source in ("direct", "prometheus"):
        def down(s: str = source) -> list[dict[str, Any]] | None:
            rows = watch(root, s)
            gone = [r for r in rows if r["replica"] == "1" and not r["up"]]
            return rows if gone and any(r["up"] for r in rows if r["replica"] == "0") else None

        wait_for(down, 30, f"replica 1 shown down by the {source} view")
    alerts = wait_for(lambda: firing(prom, "TfsoReplicaDown"), 30, "TfsoReplicaDown firing")
    assert {a["labels"]["replica"] for a in alerts} == {"1"}
    run = tfsctl(root, "monitor", "status", MODEL, "-o", "json")
    assert run.returncode == 0, run.stderr
    shown = json.loads(run.stdout)
    assert [t["health"] for t in shown["targets"] if t["replica"] == "1"] == ["down"]
    assert any(a["alert"] == "TfsoReplicaDown" and a["state"] == "firing"
               and "stable replica 1" in a["summary"] for a in shown["alerts"])
