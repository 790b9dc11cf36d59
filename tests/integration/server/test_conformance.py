"""TF Serving conformance, round 2: what TF Serving's own model-server test suite and example
clients rely on, checked with the upstream Python protos (tensorflow-serving-api) as the client.

One server per module (several fixtures, each started once): the defaults (plus a UNIX socket),
and --enable_serialization_as_tensor_content=true with per-model batching parameters and no
profiler.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import inference_pb2, predict_pb2, prediction_service_pb2_grpc

from orchestrator.client import AsyncGrpcClient, GrpcClient
from tests.helpers.server import ServerProcess, export_half_plus_two_tf1, export_strings_tf1
from tests.helpers.tf2_models import export_half_plus_two_tf2

pytestmark = pytest.mark.integration
# TF Serving's own test models (never copied into the repo); tests on them skip when absent.
UPSTREAM = Path(__file__).resolve().parents[3].parent / "shared" / "testdata" / "tfserving"
HPT_CPU = UPSTREAM / "saved_model_half_plus_two_cpu"
need_upstream = pytest.mark.skipif(
    not HPT_CPU.is_dir(), reason=f"TF Serving's test models are not at {UPSTREAM}"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("conformance")
    export_half_plus_two_tf1(root / "half_plus_two", versions=(123,))
    export_half_plus_two_tf2(root / "tf2", version=123)
    export_strings_tf1(root / "strings")
    # Read only with --enable_per_model_batching_parameters (the content_server below).
    (root / "strings" / "1" / "batching_params.pbtxt").write_text("max_batch_size { value: 4 }\n")
    bases = {n: root / n for n in ("half_plus_two", "tf2", "strings")}
    if HPT_CPU.is_dir():
        bases["upstream"] = HPT_CPU
    config = "model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{base}" model_platform: "tensorflow" }}\n'
        for n, base in bases.items()
    ) + "}\n"
    (root / "models.config").write_text(config)
    # A version folder holding only model.tflite (LiteRT, --prefer_tflite_model), converted from
    # the TF2 model: its signatures come from the converter.
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(root / "tf2" / "123"), signature_keys=["serving_default"]
    )
    (root / "tfl" / "7").mkdir(parents=True)
    (root / "tfl" / "7" / "model.tflite").write_bytes(converter.convert())
    extra = f'  config {{ name: "tfl" base_path: "{root / "tfl"}" model_platform: "tensorflow" }}\n'
    (root / "content.config").write_text(config.replace("}\n", "}\n" + extra, 1))
    return root


def _serve(models: Path, *extra: str, config: str = "models.config") -> ServerProcess:
    return ServerProcess([f"--model_config_file={models / config}", *extra])


@pytest.fixture(scope="module")
def server(models: Path):
    with _serve(models, f"--grpc_socket_path={models / 'tfs.sock'}") as srv:
        for name in ("half_plus_two", "tf2", "strings"):
            srv.wait_until_available(name)
        yield srv


@pytest.fixture(scope="module")
def content_server(models: Path):
    flags = ("--enable_serialization_as_tensor_content=true", "--enable_batching",
             "--enable_per_model_batching_parameters", "--enable_profiler=false",
             "--prefer_tflite_model=true", "--num_tflite_pools=2")
    with _serve(models, *flags, config="content.config") as srv:
        srv.wait_until_available("tfl")
        srv.wait_until_available("half_plus_two")
        srv.wait_until_available("strings")
        yield srv


def _stub(target: str) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))


def _predict(target: str, model: str, name: str, value: tf.Tensor | list) -> predict_pb2.PredictResponse:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return _stub(target).Predict(req, timeout=30)


# -- 1. typed output fields ------------------------------------------------------------------------
def test_predict_outputs_use_typed_fields_by_default(server) -> None:
    # Upstream's VerifyPredictRequest and mnist client read float_val.
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "half_plus_two"
    req.inputs["x"].dtype = tf.float32.as_datatype_enum
    req.inputs["x"].float_val.append(2.0)
    req.inputs["x"].tensor_shape.dim.add().size = 1
    req.output_filter.append("y")
    y = _stub(server.grpc_target).Predict(req, timeout=30).outputs["y"]
    assert (y.dtype, list(y.float_val), y.tensor_content) == (tf.float32.as_datatype_enum, [3.0], b"")
    assert [d.size for d in y.tensor_shape.dim] == [1]

    out = _predict(server.grpc_target, "strings", "text", [b"ab", b"xyz"]).outputs
    assert (list(out["length"].int_val), out["length"].tensor_content) == ([2, 3], b"")
    assert list(out["upper"].string_val) == [b"AB", b"XYZ"]


def test_predict_outputs_as_tensor_content_when_asked(content_server) -> None:
    x = np.arange(6, dtype=np.float32).reshape(6, 1)
    y = _predict(content_server.grpc_target, "half_plus_two", "x", x).outputs["y"]
    assert list(y.float_val) == [] and y.tensor_content == (0.5 * x + 2).tobytes()
    length = _predict(content_server.grpc_target, "strings", "text", [b"ab"]).outputs["length"]
    assert list(length.int_val) == [] and length.tensor_content == np.int32([2]).tobytes()


async def _aio_predict(target: str, model: str, inputs: dict) -> dict:
    async with AsyncGrpcClient(target) as client:
        return await client.predict(model, inputs)


def test_our_clients_decode_both_forms(server, content_server) -> None:
    x = np.linspace(-3, 3, 40_000, dtype=np.float32).reshape(-1, 1)  # above the small-message path
    import asyncio

    for srv in (server, content_server):
        with GrpcClient(srv.grpc_target) as client:
            for _ in range(2):  # the second answer goes through the cached response layout
                np.testing.assert_array_equal(client.predict("half_plus_two", {"x": x})["y"], 0.5 * x + 2)
                small = client.predict("half_plus_two", {"x": x[:3]})["y"]
                np.testing.assert_array_equal(small, 0.5 * x[:3] + 2)
            out = client.predict("strings", {"text": np.array([b"ab", b"xyz"], dtype=object)})
            assert out["length"].tolist() == [2, 3] and out["length"].dtype == np.int32
            assert out["upper"].tolist() == [b"AB", b"XYZ"]
        got = asyncio.run(_aio_predict(srv.grpc_target, "half_plus_two", {"x": x}))
        np.testing.assert_array_equal(got["y"], 0.5 * x + 2)


# -- 2. MultiInference on TF2 SavedModels -----------------------------------------------------------
def _multi_inference(target: str, model: str, xs: list[float]) -> inference_pb2.MultiInferenceResponse:
    req = inference_pb2.MultiInferenceRequest()
    for sig, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                        ("classify_x_to_y", "tensorflow/serving/classify")):
        task = req.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = sig
        task.method_name = method
    for x in xs:
        req.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return _stub(target).MultiInference(req, timeout=30)


@pytest.mark.parametrize("model", ["tf2", "half_plus_two"])
def test_multi_inference_feeds_each_signature_its_own_input(server, model) -> None:
    # tf.saved_model.save gives regress_x_to_y and classify_x_to_y different input tensors.
    resp = _multi_inference(server.grpc_target, model, [2.0, 4.0])
    assert [r.value for r in resp.results[0].regression_result.regressions] == [3.0, 4.0]
    scores = [c.classes[0].score for c in resp.results[1].classification_result.classifications]
    assert scores == [3.0, 4.0]
    for result, sig in zip(resp.results, ("regress_x_to_y", "classify_x_to_y"), strict=True):
        assert (result.model_spec.name, result.model_spec.signature_name) == (model, sig)
        assert result.model_spec.version.value == 123


# -- 4. --grpc_socket_path ----------------------------------------------------------------------------
def test_grpc_on_a_unix_socket_beside_the_tcp_port(server, models) -> None:
    # Upstream's testPredictUDS: the same services on unix:PATH.
    y = _predict(f"unix:{models / 'tfs.sock'}", "half_plus_two", "x", [2.0]).outputs["y"]
    assert list(y.float_val) == [3.0]
    assert list(_predict(server.grpc_target, "half_plus_two", "x", [4.0]).outputs["y"].float_val) == [4.0]
    assert "Running gRPC ModelServer at UNIX socket" in server.logs()



# -- 5. REST JSON laid out as TF Serving writes it ---------------------------------------------------
def test_rest_json_is_byte_for_byte_upstream_layout(server) -> None:
    import requests

    url = f"{server.rest_url}/v1/models/half_plus_two"
    answer = requests.post(f"{url}:predict", json={"instances": [1.0, 2.0, 5.0]}, timeout=30)
    assert answer.content == b'{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'
    answer = requests.post(f"{url}:regress", timeout=30,
                           json={"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert answer.content == b'{\n    "results": [3.0]\n}'
    status = requests.get(url, timeout=30).content
    assert status == (
        b'{\n "model_version_status": [\n  {\n   "version": "123",\n   "state": "AVAILABLE",\n'
        b'   "status": {\n    "error_code": "OK",\n    "error_message": ""\n   }\n  }\n ]\n}'
    )
    missing = requests.get(f"{url}/versions/9", timeout=30)
    assert missing.content.startswith(b'{\n    "error": "')


def test_per_model_batching_parameters(server, content_server) -> None:
    five = [b"a", b"b", b"c", b"d", b"e"]
    with pytest.raises(grpc.RpcError) as e:  # strings/1/batching_params.pbtxt: max_batch_size 4
        _predict(content_server.grpc_target, "strings", "text", five)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "Task size 5 is larger than maximum input batch size 4"
    # A version without the file is not batched; without the flag the file is not read.
    assert _predict(content_server.grpc_target, "half_plus_two", "x", [1.0] * 5).outputs["y"]
    assert list(_predict(server.grpc_target, "strings", "text", five).outputs["length"].int_val) == [1] * 5


# -- 6. Profiler service -------------------------------------------------------------------------------
def test_profiler_trace_writes_a_trace(server, tmp_path) -> None:
    # What upstream's test_profiler_service_with_valid_trace_request does, with predicts in flight.
    import threading

    logdir = tmp_path / "logs"
    logdir.mkdir()
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            _predict(server.grpc_target, "half_plus_two", "x", [1.0, 2.0])

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        tf.profiler.experimental.client.trace(f"grpc://{server.grpc_target}", str(logdir), 500)
    finally:
        done.set()
        worker.join(30)
    traces = list((logdir / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    assert "Profiler service is enabled" in server.logs()


def test_profiler_refuses_paths_and_can_be_disabled(server, content_server) -> None:
    def profile(target: str, request: bytes) -> grpc.RpcError:
        call = grpc.insecure_channel(target).unary_unary("/tensorflow.ProfilerService/Profile")
        with pytest.raises(grpc.RpcError) as e:
            call(request, timeout=30)
        return e.value

    # duration_ms 1, repository_root "/tmp", session_id "a/.." (not a file name)
    err = profile(server.grpc_target, b"\x08\x01\x2a\x04/tmp\x32\x04a/..")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert profile(content_server.grpc_target, b"").code() == grpc.StatusCode.UNIMPLEMENTED


# -- 7. TFLite versions (--prefer_tflite_model) -------------------------------------------------------
def test_tflite_version_over_grpc_and_rest(content_server) -> None:
    import requests
    from tensorflow_serving.apis import get_model_metadata_pb2

    # The converter's serving_default signature keeps the SavedModel's names (x -> y).
    y = _predict(content_server.grpc_target, "tfl", "x", np.array([1.0, 2.0, 5.0], np.float32))
    assert y.model_spec.version.value == 7 and y.model_spec.signature_name == "serving_default"
    np.testing.assert_array_equal(tf.make_ndarray(y.outputs["y"]), [2.5, 3.0, 4.5])
    rest = requests.post(f"{content_server.rest_url}/v1/models/tfl:predict",
                         json={"instances": [1.0, 2.0, 5.0]}, timeout=30)
    assert rest.json() == {"predictions": [2.5, 3.0, 4.5]}
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "tfl"
    meta = _stub(content_server.grpc_target).GetModelMetadata(req, timeout=30)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    meta.metadata["signature_def"].Unpack(sigs)
    assert set(sigs.signature_def) >= {"serving_default"}
    assert list(sigs.signature_def["serving_default"].inputs) == ["x"]


# -- the same checks on TF Serving's own half_plus_two (TF1, from ../shared) ------------------------
@need_upstream
def test_upstream_half_plus_two_typed_fields_multi_inference_and_rest_layout(server) -> None:
    import requests

    server.wait_until_available("upstream")
    y = _predict(server.grpc_target, "upstream", "x", np.float32([2.0])).outputs["y"]
    assert (list(y.float_val), y.tensor_content) == ([3.0], b"")
    resp = _multi_inference(server.grpc_target, "upstream", [2.0])
    assert resp.results[0].regression_result.regressions[0].value == 3.0
    assert resp.results[1].classification_result.classifications[0].classes[0].score == 3.0
    answer = requests.post(f"{server.rest_url}/v1/models/upstream:predict",
                           json={"instances": [1.0, 2.0, 5.0]}, timeout=30)
    assert answer.content == b'{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'
