"""The metrics scrape on a live server: a plain scrape is answered where its bytes arrive (the
fast path in server.rest, #13), on a kept-alive connection, with the same page the normal path
gives, and without disturbing requests before or after it on that connection.

The fast path's answer carries no `Server` header (aiohttp's normal answers do), which is how these
tests see which path answered.
"""

from __future__ import annotations

import json
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.server import ServerProcess

pytestmark = pytest.mark.integration
PATH = "/monitoring/prometheus/metrics"
SCRAPE = f"GET {PATH} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Prometheus/2\r\n".encode()


class Conn:
    """One raw HTTP/1.1 connection, so keep-alive and pipelining are under the test's control."""

    def __init__(self, srv: ServerProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", srv.rest_port), timeout=30)
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self) -> tuple[str, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed mid-response: {self.buf!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
        size = int(headers["content-length"])
        while len(self.buf) < size:
            assert self._fill(), "connection closed mid-body"
        body, self.buf = self.buf[:size], self.buf[size:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        return not self.buf and not self._fill()

    def close(self) -> None:
        self.sock.close()


def predict(x: float) -> bytes:
    body = json.dumps({"instances": [x]}).encode()
    return (b"POST /v1/models/half_plus_two/versions/1:predict HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def families(body: bytes) -> set[str]:
    return {f.name for f in text_string_to_metric_families(body.decode())}


def settle_on_fast_path(conn: Conn) -> None:
    """Scrape until the fast path answers. The client has a normal-path answer a moment before
    aiohttp is back waiting for the next request; a scrape landing in that moment takes the normal
    path (correct, only slower). After a fast answer the connection stays idle between scrapes, so
    the scrapes that follow are all fast."""
    for tries in range(20):
        conn.sock.sendall(SCRAPE + f"X-Request-Id: settle-{tries}\r\n\r\n".encode())
        status, headers, _ = conn.response()
        assert status == "HTTP/1.1 200 OK" and headers["x-request-id"] == f"settle-{tries}"
        if "server" not in headers:
            return
    raise AssertionError("20 scrapes after a request, none took the fast path")


def test_kept_alive_scrapes_take_the_fast_path_between_requests(server: ServerProcess) -> None:
    conn = Conn(server)
    try:
        conn.sock.sendall(predict(2.0))
        status, headers, body = conn.response()
        assert status == "HTTP/1.1 200 OK" and json.loads(body) == {"predictions": [3.0]}
        assert "server" in headers  # aiohttp answered
        settle_on_fast_path(conn)
        for i in range(3):
            conn.sock.sendall(SCRAPE + f"X-Request-Id: scrape-{i}\r\n\r\n".encode())
            status, headers, body = conn.response()
            assert status == "HTTP/1.1 200 OK"
            assert "server" not in headers, "a scrape after a fast one took the normal path"
            assert headers["x-request-id"] == f"scrape-{i}"
            assert headers["content-type"] == "text/plain"
            names = families(body)
            assert {"tfso_requests", ":tensorflow:serving:request_count"} <= names, names
        conn.sock.sendall(predict(4.0))  # the connection still serves requests afterwards
        status, _, body = conn.response()
        assert json.loads(body) == {"predictions": [4.0]}
    finally:
        conn.close()


def test_fast_and_normal_paths_give_the_same_page(server: ServerProcess) -> None:
    """HTTP/1.0 takes the normal path; both pages hold the same families and sample names."""
    def get(request: bytes) -> tuple[str, dict[str, str], bytes]:
        conn = Conn(server)
        try:
            conn.sock.sendall(request)
            return conn.response()
        finally:
            conn.close()

    _, normal_headers, normal = get(f"GET {PATH} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
    _, fast_headers, fast = get(f"GET {PATH} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    assert "server" in normal_headers, normal_headers
    assert "server" not in fast_headers, fast_headers
    assert normal_headers["content-type"] == fast_headers["content-type"]

    def samples(body: bytes) -> set[str]:
        return {line.rpartition(" ")[0] for line in body.decode().splitlines()}

    assert samples(normal) == samples(fast)


def test_pipelined_scrape_waits_its_turn_and_close_closes(server: ServerProcess) -> None:
    conn = Conn(server)
    try:
        conn.sock.sendall(predict(6.0) + SCRAPE + b"\r\n" + predict(8.0))  # one write, in order
        first, second, third = conn.response(), conn.response(), conn.response()
        assert json.loads(first[2]) == {"predictions": [5.0]}
        assert "tfso_requests" in families(second[2])
        assert json.loads(third[2]) == {"predictions": [6.0]}
        settle_on_fast_path(conn)
        conn.sock.sendall(SCRAPE + b"Connection: close\r\n\r\n")
        _, headers, body = conn.response()
        assert headers["connection"] == "close" and "server" not in headers and body
        assert conn.closed_by_server()
    finally:
        conn.close()
