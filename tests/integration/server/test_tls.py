"""--ssl_config_file: gRPC over TLS with the PEM strings of an SSLConfig."""

from __future__ import annotations

import subprocess

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.helpers.requires import require_tool
from tests.helpers.server import ServerProcess, export_half_plus_two_tf1

pytestmark = pytest.mark.integration


def test_grpc_tls(tmp_path):
    require_tool("openssl", "apt-get install -y openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    ssl = tmp_path / "ssl.config"
    ssl.write_text(f"server_key: {key.read_text()!r}\nserver_cert: {cert.read_text()!r}\n")
    base = export_half_plus_two_tf1(tmp_path / "hpt")
    with ServerProcess(
        ["--model_name=hpt", f"--model_base_path={base}", f"--ssl_config_file={ssl}"]
    ) as srv:
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(
            srv.grpc_target, creds, options=[("grpc.ssl_target_name_override", "localhost")]
        ) as ch:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "hpt"
            req.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]]))
            resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, timeout=30)
            assert tf.make_ndarray(resp.outputs["y"]).tolist() == [[2.5]]
        with grpc.insecure_channel(srv.grpc_target) as plain, pytest.raises(grpc.RpcError):
            prediction_service_pb2_grpc.PredictionServiceStub(plain).Predict(req, timeout=5)
