"""TLS, retries, deadlines and a server that is down, with real sockets and processes."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from orchestrator.client import (
    AsyncGrpcClient,
    ClientServingError,
    DeadlineExceeded,
    GrpcClient,
    RestClient,
    RetryPolicy,
    ServingUnavailable,
    Tls,
    Unauthenticated,
)
from orchestrator.protos import config_pb2

from .conftest import Server, free_port, make_certs, start_server

pytestmark = pytest.mark.integration

X = np.ones((1, 3), np.float32)
NO_RETRY = RetryPolicy(attempts=1)
FAST_RETRY = RetryPolicy(attempts=3, initial_backoff_s=0.05, max_backoff_s=0.1, jitter_s=0.0)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(model_root, certs, tmp_path_factory) -> Iterator[Server]:
    """gRPC with TLS and client certificates required (TF Serving's --ssl_config_file)."""
    ssl = config_pb2.SSLConfig(
        server_key=certs["server.key"].read_text(),
        server_cert=certs["server.pem"].read_text(),
        custom_ca=certs["ca.pem"].read_text(),
        client_verify=True,
    )
    directory = tmp_path_factory.mktemp("tls")
    (directory / "ssl.config").write_text(text_format.MessageToString(ssl))
    srv = start_server(
        model_root, directory / "server.log", [f"--ssl_config_file={directory / 'ssl.config'}"]
    )
    yield srv
    srv.stop()


def test_tls_with_client_certificate(tls_server, certs) -> None:
    tls = Tls(ca_file=certs["ca.pem"], cert_file=certs["client.pem"], key_file=certs["client.key"])
    with GrpcClient(tls_server.grpc_address, tls=tls) as client:
        client.wait_until_available("scale", timeout_s=60)
        np.testing.assert_allclose(client.predict("scale", {"x": X}, version=1)["y"], 2 * X)
    # The certificate names 127.0.0.1 and localhost; server_name checks another name.
    named = Tls(
        ca_file=certs["ca.pem"],
        cert_file=certs["client.pem"],
        key_file=certs["client.key"],
        server_name="localhost",
    )
    with GrpcClient(f"localhost:{tls_server.grpc_port}", tls=named) as client:
        # is_model_ready makes one call without retries; a new channel's first call can fail
        # while "localhost" is still connecting (::1 refused, then 127.0.0.1), so wait first.
        client.wait_until_available("scale", timeout_s=60)
        assert client.is_model_ready("scale")


async def _aio_tls_predict(address: str, tls: Tls) -> np.ndarray:
    async with AsyncGrpcClient(address, tls=tls) as client:
        return (await client.predict("scale", {"x": X}, version=1))["y"]


def test_tls_asyncio(tls_server, certs) -> None:
    tls = Tls(ca_file=certs["ca.pem"], cert_file=certs["client.pem"], key_file=certs["client.key"])
    np.testing.assert_allclose(asyncio.run(_aio_tls_predict(tls_server.grpc_address, tls)), 2 * X)


@pytest.mark.parametrize("case", ["no client cert", "plaintext", "unknown CA"])
def test_tls_refusals_are_errors_not_hangs(tls_server, certs, case) -> None:
    if case == "no client cert":
        tls: Tls | None = Tls(ca_file=certs["ca.pem"])
    elif case == "plaintext":
        tls = None
    else:
        tls = Tls(
            ca_file=certs["other_ca.pem"],
            cert_file=certs["client.pem"],
            key_file=certs["client.key"],
        )
    # A refusal is an answer (UNAVAILABLE / UNAUTHENTICATED), never the deadline running out:
    # the deadline is long, so a hang would show as DeadlineExceeded, whatever the machine's speed.
    client = GrpcClient(tls_server.grpc_address, tls=tls, retry=NO_RETRY, timeout_s=120)
    with client, pytest.raises(ClientServingError) as info:
        client.predict("scale", {"x": X}, version=1)
    assert not isinstance(info.value, DeadlineExceeded), info.value
    assert isinstance(info.value, ServingUnavailable) or info.value.code in (
        "UNAUTHENTICATED",
        "UNAVAILABLE",
    )


def test_retries_until_a_late_server_is_up(model_root, tmp_path, caplog) -> None:
    """Both clients call before the server exists; retries carry them until it answers."""
    caplog.set_level(logging.INFO, logger="orchestrator.client")
    late = Server([f"--model_config_file={model_root / 'models.config'}"], tmp_path / "late.log")
    patient = RetryPolicy(attempts=10_000, initial_backoff_s=0.05, max_backoff_s=0.5)
    grpc_client = GrpcClient(late.grpc_address, retry=patient, timeout_s=120)
    rest_client = RestClient(late.rest_url, retry=patient, timeout_s=120)
    try:
        with ThreadPoolExecutor(2) as pool:
            calls = [
                pool.submit(grpc_client.predict, "scale", {"x": X}, version=1),
                pool.submit(rest_client.predict, "scale", {"x": X}, version=1),
            ]
            # Both have failed at least once against the closed ports before the server starts.
            wait_for_retries(caplog, {late.grpc_address, late.rest_url})
            assert not any(c.done() for c in calls)
            late.start()
            for call in calls:
                np.testing.assert_allclose(call.result(timeout=150)["y"], 2 * X)
    finally:
        grpc_client.close()
        rest_client.close()
        late.stop()
    assert any("retrying" in r.getMessage() for r in caplog.records)


def wait_for_retries(caplog, addresses: set[str], deadline_s: float = 60.0) -> None:
    """Until the client log shows a retry naming each address."""
    end = time.monotonic() + deadline_s
    while True:
        messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying")]
        if all(any(re.search(re.escape(a) + r"(?!\d)", m) for m in messages) for a in addresses):
            return
        if time.monotonic() > end:
            raise AssertionError(f"no retry logged for each of {addresses} in {deadline_s:g} s: {messages}")
        time.sleep(0.02)


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def test_deadline_against_a_silent_server(black_hole) -> None:
    """The call ends with its deadline, not before. gRPC gives up on the HTTP/2 handshake and
    says UNAVAILABLE, retried until the deadline: retries stop once the next backoff would pass
    it (RetryPolicy), so backoffs of 0.05 s end the call within 0.05 s of it (the default
    policy's 0.4 s backoff could end it 0.4 s early, by design). REST times out reading the
    answer. That it ends at all is the suite's per-test timeout's job: no upper bound on a
    machine's speed."""
    fine = RetryPolicy(attempts=10_000, initial_backoff_s=0.05, max_backoff_s=0.05, jitter_s=0.0)
    for client, expected in (
        (
            GrpcClient(f"127.0.0.1:{black_hole}", timeout_s=1.0, retry=fine),
            (DeadlineExceeded, ServingUnavailable),
        ),
        (RestClient(f"http://127.0.0.1:{black_hole}", timeout_s=1.0), DeadlineExceeded),
    ):
        started = time.monotonic()
        with client, pytest.raises(expected):
            client.status("scale")
        assert time.monotonic() - started >= 0.9, type(client).__name__  # it did wait


def test_tiny_deadline_against_a_real_server(server) -> None:
    with GrpcClient(server.grpc_address) as client:
        client.predict("scale", {"x": X})  # the channel is connected
        with pytest.raises(DeadlineExceeded):
            client.predict("scale", {"x": np.ones((100_000, 3), np.float32)}, timeout_s=1e-4)


def test_server_down(caplog) -> None:
    """Refused connections are retried exactly as the policy says (3 attempts), then reported as
    unavailable; the deadline is long, so waiting it out instead would be DeadlineExceeded."""
    caplog.set_level(logging.INFO, logger="orchestrator.client")
    port = free_port()
    for client in (
        GrpcClient(f"127.0.0.1:{port}", retry=FAST_RETRY, timeout_s=120),
        RestClient(f"http://127.0.0.1:{port}", retry=FAST_RETRY, timeout_s=120),
    ):
        with client:
            caplog.clear()
            with pytest.raises(ServingUnavailable) as info:
                client.predict("scale", {"x": X})
            retries = [r for r in caplog.records if r.getMessage().startswith("retrying")]
            assert len(retries) == FAST_RETRY.attempts - 1, [r.getMessage() for r in retries]
            assert info.value.address in (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}")
            assert info.value.fix and str(port) in info.value.fix
            assert not client.is_model_ready("scale")
            with pytest.raises(DeadlineExceeded, match="last seen"):
                client.wait_until_available("scale", timeout_s=0.5, poll_interval_s=0.1)


def test_server_down_asyncio() -> None:
    async def main() -> None:
        async with AsyncGrpcClient(f"127.0.0.1:{free_port()}", retry=FAST_RETRY) as client:
            with pytest.raises(ServingUnavailable):
                await client.status("scale")
            assert not await client.is_model_ready("scale")

    asyncio.run(main())


@pytest.fixture
def https_server(certs) -> Iterator[int]:
    """TF Serving has no HTTPS: a stand-in answering the status call, client certs required."""
    import json
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(
                {"model_version_status": [{"version": "3", "state": "AVAILABLE",
                                           "status": {"error_code": "OK", "error_message": ""}}]}
            ).encode()  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs["server.pem"], certs["server.key"])
    context.load_verify_locations(certs["ca.pem"])
    context.verify_mode = ssl.CERT_REQUIRED
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_https_with_client_certificate(https_server, certs) -> None:
    tls = Tls(ca_file=certs["ca.pem"], cert_file=certs["client.pem"], key_file=certs["client.key"])
    with RestClient(f"https://127.0.0.1:{https_server}", tls=tls) as client:
        assert [(s.version, s.state) for s in client.status("m")] == [(3, "AVAILABLE")]
    unknown_ca = Tls(ca_file=certs["other_ca.pem"])
    client = RestClient(f"https://127.0.0.1:{https_server}", tls=unknown_ca, retry=NO_RETRY)
    with client, pytest.raises(Unauthenticated, match="TLS"):
        client.status("m")


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, dict[str, int]]]:
    """A REST stand-in that counts requests: `GET /v1/models/flaky` answers 503 (UNAVAILABLE,
    what TF Serving says while it cannot serve) twice then its status; `GET /v1/models/bad`
    always answers 400 (INVALID_ARGUMENT). A real server cannot be made to fail transiently on cue."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            model = self.path.split("/")[3]
            hits[model] = hits.get(model, 0) + 1
            if model == "flaky" and hits[model] <= 2:
                code, body = 503, {"error": "Servable not available yet"}
            elif model == "flaky":
                code, body = 200, {"model_version_status": [
                    {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
            else:
                code, body = 400, {"error": "input tensor alias not found in signature: nope"}
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_only_transient_failures_are_retried(flaky_server, server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.client")
    url, hits = flaky_server
    with RestClient(url, retry=FAST_RETRY, timeout_s=60) as client:
        assert [(v.version, v.state) for v in client.status("flaky")] == [(1, "AVAILABLE")]  # after two 503s
        with pytest.raises(ClientServingError) as info:
            client.status("bad")
    assert not isinstance(info.value, ServingUnavailable) and info.value.code == "INVALID_ARGUMENT"
    assert hits == {"flaky": 3, "bad": 1}, "503 retried until it answered; 400 sent once"
    # The real server: a wrong input name is INVALID_ARGUMENT, answered once and never retried.
    caplog.clear()
    for client in (GrpcClient(server.grpc_address, retry=FAST_RETRY),
                   RestClient(server.rest_url, retry=FAST_RETRY)):
        with client, pytest.raises(ClientServingError) as info:
            client.predict("scale", {"nope": X})
        assert info.value.code == "INVALID_ARGUMENT"
    assert not [r for r in caplog.records if r.getMessage().startswith("retrying")]
