"""Versions, policies, labels, reloads and health: each test runs its own server on its own models."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
import requests
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from tests.helpers.server import (
    ServerProcess,
    copy_version,
    export_half_plus_two_tf1,
    wait_until,
    write_corrupt_version,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hpt_source(tmp_path_factory) -> Path:
    """Versions 1 (b=2) and 2 (b=3) to copy from."""
    root = tmp_path_factory.mktemp("hpt_source")
    export_half_plus_two_tf1(root, versions=(1,), b=2.0)
    export_half_plus_two_tf1(root, versions=(2,), b=3.0)
    return root


def make_base(tmp_path: Path, source: Path, versions) -> Path:
    base = tmp_path / "hpt"
    base.mkdir(parents=True, exist_ok=True)
    for v in versions:
        shutil.copytree(source / str(v), base / str(v))
    return base


def predict(srv, model="hpt", suffix="", x=1.0):
    r = requests.post(
        f"{srv.rest_url}/v1/models/{model}{suffix}:predict", json={"instances": [x]}, timeout=30
    )
    return r.status_code, r.json()


def reload(srv, text: str):
    cfg = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    with grpc.insecure_channel(srv.grpc_target) as ch:
        stub = model_service_pb2_grpc.ModelServiceStub(ch)
        return stub.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=cfg), timeout=60
        )


def config(*entries: str) -> str:
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"


def entry(name: str, base: Path, extra: str = "") -> str:
    return f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra} }}'


def health(srv, service: str) -> int:
    with grpc.insecure_channel(srv.grpc_target) as ch:
        try:
            return (
                health_pb2_grpc.HealthStub(ch)
                .Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                .status
            )
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            raise


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_new_version_loads_and_old_unloads(tmp_path, hpt_source):
    base = make_base(tmp_path, hpt_source, [1])
    args = ["--model_name=hpt", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"]
    with ServerProcess(args) as srv:
        srv.wait_until_available("hpt", [1])
        assert predict(srv) == (200, {"predictions": [2.5]})
        shutil.copytree(hpt_source / "2", tmp_path / "staging2")
        (tmp_path / "staging2").rename(base / "2")
        srv.wait_until_states("hpt", {2: "AVAILABLE", 1: "END"})
        assert predict(srv) == (200, {"predictions": [3.5]})
        shutil.rmtree(base / "2")  # the removed version unloads; version 1 is the latest again
        srv.wait_until_states("hpt", {1: "AVAILABLE", 2: "END"})
        assert predict(srv) == (200, {"predictions": [2.5]})


def test_corrupt_version_beside_a_good_one(tmp_path, hpt_source):
    base = make_base(tmp_path, hpt_source, [1])
    write_corrupt_version(base, 3)
    cfg = tmp_path / "models.config"
    cfg.write_text(config(entry("hpt", base, "model_version_policy { all {} }")))
    with ServerProcess([f"--model_config_file={cfg}"]) as srv:
        states = srv.wait_until_states("hpt", {1: "AVAILABLE", 3: "END"})
        assert states == {1: "AVAILABLE", 3: "END"}
        status = {v["version"]: v for v in srv.status("hpt")["model_version_status"]}
        assert status["3"]["status"]["error_code"] != "OK"
        assert status["3"]["status"]["error_message"]
        assert status["1"]["status"] == {"error_code": "OK", "error_message": ""}
        assert predict(srv) == (200, {"predictions": [2.5]})  # latest AVAILABLE is 1
        code, _body = predict(srv, suffix="/versions/3")
        assert code == 404


def test_failed_new_version_keeps_old_serving(tmp_path, hpt_source):
    base = make_base(tmp_path, hpt_source, [1])
    args = ["--model_name=hpt", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"]
    with ServerProcess(args) as srv:
        srv.wait_until_available("hpt", [1])
        write_corrupt_version(tmp_path / "staging", 2)
        (tmp_path / "staging" / "2").rename(base / "2")
        srv.wait_until_states("hpt", {2: "END"})
        assert srv.version_states("hpt")[1] == "AVAILABLE"
        assert predict(srv) == (200, {"predictions": [2.5]})


def test_specific_policy_and_labels(tmp_path, hpt_source):
    base = make_base(tmp_path, hpt_source, [1, 2])
    cfg = tmp_path / "models.config"
    cfg.write_text(
        config(
            entry(
                "hpt",
                base,
                'model_version_policy { specific { versions: 1 } } version_labels { key: "stable" value: 1 }',
            )
        )
    )
    with ServerProcess([f"--model_config_file={cfg}"]) as srv:
        srv.wait_until_available("hpt", [1])
        assert 2 not in srv.version_states("hpt")
        assert predict(srv, suffix="/labels/stable") == (200, {"predictions": [2.5]})
        # A label on a version that is not loaded: TF Serving's FAILED_PRECONDITION.
        bad = config(
            entry(
                "hpt",
                base,
                'model_version_policy { specific { versions: 1 } } version_labels { key: "canary" value: 2 }',
            )
        )
        with pytest.raises(grpc.RpcError) as e:
            reload(srv, bad)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert e.value.details() == (
            "Request to assign label to version 2 of model hpt, which is not currently "
            "available for inference"
        )
        # Moving a label is two reloads: load {1, 2}, then point the label at 2.
        both = "model_version_policy { specific { versions: [1, 2] } }"
        reload(srv, config(entry("hpt", base, both + ' version_labels { key: "stable" value: 1 }')))
        srv.wait_until_available("hpt", [1, 2])
        reload(srv, config(entry("hpt", base, both + ' version_labels { key: "stable" value: 2 }')))
        assert predict(srv, suffix="/labels/stable") == (200, {"predictions": [3.5]})


def test_allow_labels_for_unavailable_models(tmp_path, hpt_source):
    base = make_base(tmp_path, hpt_source, [1])
    cfg = tmp_path / "models.config"
    cfg.write_text(config(entry("hpt", base, 'version_labels { key: "next" value: 5 }')))
    args = [f"--model_config_file={cfg}", "--allow_version_labels_for_unavailable_models"]
    with ServerProcess(args) as srv:
        srv.wait_until_available("hpt", [1])
        code, body = predict(srv, suffix="/labels/next")
        assert code == 404
        assert body == {"error": "Servable not found for request: Specific(hpt, 5)"}


def test_reload_replaces_the_whole_config(tmp_path, hpt_source):
    base = make_base(tmp_path, hpt_source, [1])
    other = tmp_path / "other"
    shutil.copytree(hpt_source / "2", other / "7")
    cfg = tmp_path / "models.config"
    cfg.write_text(config(entry("hpt", base)))
    with ServerProcess([f"--model_config_file={cfg}"]) as srv:
        srv.wait_until_available("hpt", [1])
        resp = reload(srv, config(entry("other", other)))
        assert resp.status.error_code == 0
        # The new model is loaded when the reload returns; the left-out one unloads.
        assert srv.version_states("other") == {7: "AVAILABLE"}
        srv.wait_until_states("hpt", {1: "END"})
        assert predict(srv, model="other") == (200, {"predictions": [3.5]})
        code, body = predict(srv, model="hpt")
        assert (code, body) == (404, {"error": "Servable not found for request: Latest(hpt)"})
        assert health(srv, "") == SERVING
        assert health(srv, "hpt") == NOT_SERVING


def test_config_file_polling(tmp_path, hpt_source):
    base = make_base(tmp_path, hpt_source, [1])
    cfg = tmp_path / "models.config"
    cfg.write_text(config(entry("hpt", base)))
    args = [f"--model_config_file={cfg}", "--model_config_file_poll_wait_seconds=1"]
    with ServerProcess(args) as srv:
        srv.wait_until_available("hpt", [1])
        tmp = tmp_path / "models.config.new"
        tmp.write_text(config(entry("hpt", base), entry("again", base)))
        tmp.rename(cfg)
        srv.wait_until_available("again", [1], timeout_s=60)
        assert predict(srv, model="again") == (200, {"predictions": [2.5]})


def test_missing_base_path_then_created(tmp_path, hpt_source):
    base = tmp_path / "later"
    args = ["--model_name=hpt", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"]
    with ServerProcess(args) as srv:
        r = requests.get(f"{srv.rest_url}/v1/models/hpt", timeout=10)
        assert (r.status_code, r.json()) == (
            404,
            {"error": "Could not find any versions of model hpt"},
        )
        assert health(srv, "") == NOT_SERVING
        assert health(srv, "hpt") == NOT_SERVING
        assert "Could not find base path" in srv.logs()
        copy_dst = tmp_path / "staging"
        shutil.copytree(hpt_source / "1", copy_dst / "1")
        copy_dst.rename(base)
        srv.wait_until_available("hpt", [1])
        wait_until(lambda: health(srv, "") == SERVING, timeout_s=30, what="overall health SERVING")
        assert health(srv, "hpt") == SERVING
        assert predict(srv) == (200, {"predictions": [2.5]})


def test_copy_version_helper_is_atomic(tmp_path, hpt_source):
    base = make_base(tmp_path, hpt_source, [1])
    copy_version(base, 1, 4)
    assert (base / "4" / "saved_model.pb").exists()
    assert not list(base.glob(".tmp-*"))


def test_model_warmup_replays_requests(tmp_path, hpt_source):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    base = make_base(tmp_path, hpt_source, [1])
    extra = base / "1" / "assets.extra"
    extra.mkdir()
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "hpt"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]]))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as w:
        w.write(log.SerializeToString())
    bad = make_base(tmp_path / "bad", hpt_source, [1])
    (bad / "1" / "assets.extra").mkdir()
    req.inputs["nope"].CopyFrom(tf.make_tensor_proto([1.0]))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))
    with tf.io.TFRecordWriter(str(bad / "1" / "assets.extra" / "tf_serving_warmup_requests")) as w:
        w.write(log.SerializeToString())
    cfg = tmp_path / "models.config"
    cfg.write_text(config(entry("hpt", base), entry("bad", bad)))
    with ServerProcess([f"--model_config_file={cfg}"]) as srv:
        srv.wait_until_available("hpt", [1])
        assert predict(srv) == (200, {"predictions": [2.5]})
        states = srv.wait_until_states("bad", {1: "END"})
        assert states == {1: "END"}
        status = srv.status("bad")["model_version_status"][0]["status"]
        assert "Warmup failed" in status["error_message"]
