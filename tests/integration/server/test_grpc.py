"""gRPC conformance, spoken with TF Serving's own stubs and messages (tensorflow-serving-api)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(
        server.grpc_target, options=[("grpc.max_receive_message_length", 2**31 - 1)]
    )
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(model="half_plus_two", x=((1.0,), (2.0,)), **spec):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    for k, v in spec.items():
        if k == "version":
            req.model_spec.version.value = v
        else:
            setattr(req.model_spec, k, v)
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(x, dtype=np.float32)))
    return req


def examples_input(inp, xs):
    for x in xs:
        inp.example_list.examples.add().features.feature["x"].float_list.value.append(x)


def test_predict(predict_stub):
    resp = predict_stub.Predict(predict_request(version=1), timeout=30)
    assert resp.model_spec.name == "half_plus_two"
    assert resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["y"]), [[2.5], [3.0]])


def test_predict_flat_input_like_rest_example(predict_stub):
    resp = predict_stub.Predict(predict_request(x=(1.0, 2.0, 5.0), version=1), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["y"]), [2.5, 3.0, 4.5])


def test_predict_by_label_and_latest(predict_stub):
    resp = predict_stub.Predict(predict_request(version_label="stable"), timeout=30)
    assert resp.model_spec.version.value == 1
    resp = predict_stub.Predict(predict_request(), timeout=30)
    assert resp.model_spec.version.value == 2


def test_output_filter(predict_stub):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "strings"
    req.inputs["text"].CopyFrom(tf.make_tensor_proto([b"ab", b"xyz"]))
    req.output_filter.append("length")
    resp = predict_stub.Predict(req, timeout=30)
    assert list(resp.outputs) == ["length"]
    assert tf.make_ndarray(resp.outputs["length"]).tolist() == [2, 3]
    req.output_filter[:] = ["nope"]
    with pytest.raises(grpc.RpcError) as e:
        predict_stub.Predict(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("output tensor alias not found in signature: nope")


@pytest.mark.parametrize(
    ("spec", "code", "details"),
    [
        (
            {"model": "nope"},
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        (
            {"version": 9},
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(half_plus_two, 9)",
        ),
        (
            {"version_label": "nope"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: nope",
        ),
        (
            {"signature_name": "nope"},
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
    ],
)
def test_predict_errors(predict_stub, spec, code, details):
    with pytest.raises(grpc.RpcError) as e:
        predict_stub.Predict(predict_request(**spec), timeout=30)
    assert (e.value.code(), e.value.details()) == (code, details)


def test_predict_wrong_dtype_and_inputs(predict_stub):
    req = predict_request()
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1]], dtype=np.int32)))
    with pytest.raises(grpc.RpcError) as e:
        predict_stub.Predict(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "Expects arg[0] to be float but int32 is provided"
    req.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0]))
    with pytest.raises(grpc.RpcError) as e:
        predict_stub.Predict(req, timeout=30)
    assert e.value.details().startswith("input size does not match signature: 2!=1")


def test_classify(predict_stub):
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "half_plus_two"
    req.model_spec.version.value = 1
    req.model_spec.signature_name = "classify_x_to_classes"
    examples_input(req.input, [2.0])
    resp = predict_stub.Classify(req, timeout=30)
    classes = resp.result.classifications[0].classes
    assert [c.label for c in classes] == ["low", "high"]
    assert classes[1].score == pytest.approx(0.3)
    assert resp.model_spec.signature_name == "classify_x_to_classes"


def test_regress_with_context(predict_stub):
    req = regression_pb2.RegressionRequest()
    req.model_spec.name = "half_plus_two"
    req.model_spec.version.value = 1
    req.model_spec.signature_name = "tensorflow/serving/regress"
    ctx = req.input.example_list_with_context
    ctx.context.features.feature["x"].float_list.value.append(4.0)
    ctx.examples.add()
    ctx.examples.add().features.feature["x"].float_list.value.append(2.0)
    resp = predict_stub.Regress(req, timeout=30)
    assert [r.value for r in resp.result.regressions] == [4.0, 3.0]


def test_regress_unknown_signature(predict_stub):
    req = regression_pb2.RegressionRequest()
    req.model_spec.name = "half_plus_two"
    req.model_spec.signature_name = "nope"
    examples_input(req.input, [1.0])
    with pytest.raises(grpc.RpcError) as e:
        predict_stub.Regress(req, timeout=30)
    assert (e.value.code(), e.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "No signature was found with the name: nope",
    )


def test_multi_inference(predict_stub):
    req = inference_pb2.MultiInferenceRequest()
    for sig, method in (
        ("regress_x_to_y", "tensorflow/serving/regress"),
        ("classify_x_to_y", "tensorflow/serving/classify"),
    ):
        task = req.tasks.add()
        task.model_spec.name = "half_plus_two"
        task.model_spec.version.value = 1
        task.model_spec.signature_name = sig
        task.method_name = method
    examples_input(req.input, [1.0, 4.0])
    resp = predict_stub.MultiInference(req, timeout=30)
    assert [r.value for r in resp.results[0].regression_result.regressions] == [2.5, 4.0]
    scores = [c.classes[0].score for c in resp.results[1].classification_result.classifications]
    assert scores == [2.5, 4.0]
    assert resp.results[1].model_spec.signature_name == "classify_x_to_y"


def test_get_model_metadata(predict_stub):
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "half_plus_two"
    req.metadata_field.append("signature_def")
    resp = predict_stub.GetModelMetadata(req, timeout=30)
    assert resp.model_spec.version.value == 2
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sigs)
    assert sigs.signature_def["serving_default"].inputs["x"].name == "x:0"
    req.metadata_field[:] = ["nope"]
    with pytest.raises(grpc.RpcError) as e:
        predict_stub.GetModelMetadata(req, timeout=30)
    assert e.value.details() == "Metadata field nope is not supported"


def test_get_model_status(model_stub):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "half_plus_two"
    resp = model_stub.GetModelStatus(req, timeout=30)
    assert [(s.version, s.state) for s in resp.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
    ]
    req.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as e:
        model_stub.GetModelStatus(req, timeout=30)
    assert (e.value.code(), e.value.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )


def test_health_service(channel):
    health = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", "half_plus_two", "mlp", "tensorflow.serving.ModelService"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            == serving
        )
    with pytest.raises(grpc.RpcError) as e:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_large_message(predict_stub):
    # Above gRPC's 4 MiB default: the server takes up to INT32_MAX.
    x = np.ones((2_000_000, 1), dtype=np.float32)
    resp = predict_stub.Predict(predict_request(x=x, version=1), timeout=60)
    assert tf.make_ndarray(resp.outputs["y"]).shape == (2_000_000, 1)
