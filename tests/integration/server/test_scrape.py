"""The metrics scrape on a live server: a plain scrape is answered where its bytes arrive (the
fast path in server.rest, #13), on a kept-alive connection, with the same page the normal path
gives, and without disturbing requests before or after it on that connection. A kept-alive
scrape connection then moves to the scrape thread (server.scrapes), which answers its scrapes off
the event loop and gives the connection back for anything else.

The fast path's answer carries no `Server` header (aiohttp's normal answers do), which is how these
tests see that the normal path did not answer; `tfso_metrics_scrapes_total{path}` on the page
itself tells the loop's fast path from the thread.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.server import ServerProcess, free_port, run_server_expect_exit, wait_until

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


def answered(body: bytes) -> dict[str, float]:
    """tfso_metrics_scrapes_total by path, as the page itself counts it (this scrape included)."""
    return {
        s.labels["path"]: s.value
        for f in text_string_to_metric_families(body.decode())
        if f.name == "tfso_metrics_scrapes"
        for s in f.samples
        if s.name == "tfso_metrics_scrapes_total"
    }


def scrape(conn: Conn, rid: str) -> dict[str, float]:
    conn.sock.sendall(SCRAPE + f"X-Request-Id: {rid}\r\n\r\n".encode())
    status, headers, body = conn.response()
    assert status == "HTTP/1.1 200 OK" and headers["x-request-id"] == rid
    assert "server" not in headers
    return answered(body)


def test_kept_alive_scrapes_are_answered_on_the_scrape_thread(server: ServerProcess) -> None:
    conn = Conn(server)
    try:
        settle_on_fast_path(conn)
        before = scrape(conn, "first")
        for i in range(5):
            now = scrape(conn, f"thread-{i}")
            assert now["thread"] > before["thread"], (before, now)  # this one, on the thread
            assert now["fast"] == before["fast"], "a kept-alive scrape went back to the loop"
            before = now
    finally:
        conn.close()


def test_a_pipelined_request_on_a_thread_connection_goes_back_to_the_loop(
    server: ServerProcess,
) -> None:
    """The thread only takes one whole plain scrape; a scrape followed by a predict in one write
    goes back to the event loop unread, which answers both in order."""
    conn = Conn(server)
    try:
        settle_on_fast_path(conn)
        scrape(conn, "on-thread")
        conn.sock.sendall(SCRAPE + b"X-Request-Id: piped\r\n\r\n" + predict(10.0))
        _, headers, body = conn.response()
        assert headers["x-request-id"] == "piped" and "tfso_requests" in families(body)
        _, _, body = conn.response()
        assert json.loads(body) == {"predictions": [7.0]}
        settle_on_fast_path(conn)  # and it can move to the thread again
        assert scrape(conn, "again")["thread"] >= 1
    finally:
        conn.close()


def test_thread_scrapes_beside_requests_on_the_loop(server: ServerProcess) -> None:
    """Requests on four connections (new label sets appear as they go) while one connection
    scrapes on the thread: every answer is right and every page parses."""
    errors: list[BaseException] = []

    def load(version: int) -> None:
        conn = Conn(server)
        try:
            for i in range(60):
                body = json.dumps({"instances": [float(i)]}).encode()
                path = f"/v1/models/half_plus_two/versions/{version}:predict"
                if i % 2:  # another label set for the per-version metrics
                    path = f"/v1/models/half_plus_two/labels/{'stable' if version == 1 else 'canary'}:predict"
                conn.sock.sendall(
                    b"POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s"
                    % (path.encode(), len(body), body)
                )
                status, _, answer = conn.response()
                assert status == "HTTP/1.1 200 OK", answer
        except BaseException as e:  # reported by the main thread
            errors.append(e)
        finally:
            conn.close()

    workers = [threading.Thread(target=load, args=(1 + i % 2,)) for i in range(4)]
    conn = Conn(server)
    try:
        settle_on_fast_path(conn)
        start = scrape(conn, "start")
        for w in workers:
            w.start()
        pages = 0
        while any(w.is_alive() for w in workers) or pages < 5:
            now = scrape(conn, f"under-load-{pages}")
            pages += 1
            assert pages < 2000, "the load did not finish"
        for w in workers:
            w.join(timeout=60)
        assert not errors, errors
        assert now["thread"] - start["thread"] >= pages and now["fast"] == start["fast"]
    finally:
        conn.close()


def own_server_args(model_root: Path, tmp_path: Path) -> list[str]:
    """half_plus_two with monitoring on, for a test that needs a server of its own."""
    cfg = tmp_path / "monitoring.config"
    cfg.write_text(f'prometheus_config {{ enable: true path: "{PATH}" }}\n')
    return [f"--model_base_path={model_root / 'half_plus_two'}", "--model_name=half_plus_two",
            f"--monitoring_config_file={cfg}"]


def test_stopping_the_server_closes_thread_connections(model_root: Path, tmp_path: Path) -> None:
    args = own_server_args(model_root, tmp_path)
    with ServerProcess(args) as srv:
        srv.wait_until_available("half_plus_two")
        conn = Conn(srv)
        try:
            settle_on_fast_path(conn)
            assert scrape(conn, "held")["thread"] >= 1
            assert srv.stop() == 0  # within its deadline, with a scrape connection held open
            assert wait_until(conn.closed_by_server, timeout_s=10, what="the connection to close")
        finally:
            conn.close()


def test_the_scrape_thread_can_be_turned_off(model_root: Path, tmp_path: Path) -> None:
    args = own_server_args(model_root, tmp_path)
    with ServerProcess(args, env={"TFS_SCRAPE_THREAD": "0"}) as srv:
        srv.wait_until_available("half_plus_two")
        conn = Conn(srv)
        try:
            counts = [scrape(conn, f"loop-{i}") for i in range(3)]
            assert [c["thread"] for c in counts] == [0, 0, 0]
            assert [c["fast"] - counts[0]["fast"] for c in counts] == [0, 1, 2]
        finally:
            conn.close()


def test_a_bad_switch_interval_stops_the_start(model_root: Path, tmp_path: Path) -> None:
    res = run_server_expect_exit(
        [f"--port={free_port()}", f"--rest_api_port={free_port()}",
         *own_server_args(model_root, tmp_path)],
        env={"TFS_SWITCH_INTERVAL_MS": "fast"},
    )
    assert res.returncode == 255
    assert "TFS_SWITCH_INTERVAL_MS='fast' is not a number of milliseconds" in res.stdout, res.stdout
    assert "TFS_SWITCH_INTERVAL_MS=0.5" in res.stdout
