"""The REST fast path against real servers: the same answers as aiohttp's path (TFS_REST_FAST=0),
kept-alive connections, calls that suspend (batching), deadlines, and Connection: close. Requests
are written on raw sockets so the bytes on the wire are the test's own."""

from __future__ import annotations

import re
import socket
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.server import ServerProcess, export_half_plus_two_tf1

pytestmark = pytest.mark.integration
PROM = "/monitoring/prometheus/metrics"


def call(port: int, target: str, body: bytes, headers: str = "", method: str = "POST") -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


def read_answer(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer from `sock` (bytes past it stay in `buf`)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection; got {bytes(buf)!r}"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-answer"
        rest += chunk
    buf[:] = rest[length:]
    return int(status_line.split()[1]), headers, rest[:length]


def exchange(port: int, data: bytes, answers: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        buf = bytearray()
        return [read_answer(s, buf) for _ in range(answers)]


def counter(srv: ServerProcess, name: str) -> float:
    page = urllib.request.urlopen(srv.rest_url + PROM, timeout=10).read().decode()
    m = re.search(rf"^{name} (\S+)$", page, re.MULTILINE)
    assert m, f"{name} not on the page"
    return float(m.group(1))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fast")
    export_half_plus_two_tf1(root / "hpt", versions=(1,))
    (root / "monitoring.config").write_text(f'prometheus_config {{ enable: true path: "{PROM}" }}\n')
    (root / "batching.config").write_text(
        "max_batch_size { value: 4 }\nbatch_timeout_micros { value: 1000 }\n"
        "num_batch_threads { value: 1 }\n"
    )
    return root


def args(root: Path, *extra: str) -> list[str]:
    return ["--model_name=hpt", f"--model_base_path={root / 'hpt'}",
            f"--monitoring_config_file={root / 'monitoring.config'}", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def servers(root: Path):
    """The same model twice: the fast path on (the default) and off."""
    with ServerProcess(args(root)) as fast, ServerProcess(
        args(root), env={"TFS_REST_FAST": "0"}
    ) as normal:
        fast.wait_until_available("hpt", [1])
        normal.wait_until_available("hpt", [1])
        yield fast, normal


CASES = [
    ("/v1/models/hpt:predict", b'{"instances": [1.0, 2.0, 5.0]}'),
    ("/v1/models/hpt/versions/1:predict", b'{"inputs": {"x": [[1.0]]}}'),
    ("/v1/models/hpt/labels/none:predict", b'{"instances": [1.0]}'),  # no such label
    ("/v1/models/nope:predict", b'{"instances": [1.0]}'),
    ("/v1/models/hpt:predict", b'{"instances": [1.0'),  # bad JSON
    ("/v1/models/hpt:predict", b'{"instances": [["a"]]}'),  # wrong dtype
    ("/v1/models/hpt:predict", b""),
    ("/v1/models/hpt:regress", b'{"examples": [{"x": 1.0}]}'),
    ("/v1/models/hpt:classify", b'{"examples": [{"x": 1.0}]}'),
]


def assert_same_answer(fast: ServerProcess, normal: ServerProcess, target: str, body: bytes) -> None:
    """The same request (and request id) to both servers: the same status, body and headers
    (but Date and Content-Length)."""
    rid = "X-Request-Id: same-id\r\n"
    [(status, headers, out)] = exchange(fast.rest_port, call(fast.rest_port, target, body, rid))
    [(want_status, want_headers, want)] = exchange(
        normal.rest_port, call(normal.rest_port, target, body, rid)
    )
    assert (status, out) == (want_status, want)
    for h in ("date", "content-length"):
        headers.pop(h), want_headers.pop(h)
    assert headers == want_headers


@pytest.mark.parametrize(("target", "body"), CASES)
def test_the_same_answer_as_aiohttps_path(servers, target: str, body: bytes) -> None:
    assert_same_answer(*servers, target, body)


def test_a_kept_alive_connection_is_answered_in_order_and_counted(servers) -> None:
    fast, _ = servers
    before = counter(fast, "tfso_rest_fast_path_requests_total")
    port = fast.rest_port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        buf = bytearray()
        for i in range(20):
            s.sendall(call(port, "/v1/models/hpt:predict", b'{"instances": [%d.0]}' % i))
            status, _, out = read_answer(s, buf)
            assert status == 200 and out.replace(b" ", b"").replace(b"\n", b"") == (
                b'{"predictions":[%s]}' % str(0.5 * i + 2.0).encode()
            )
        # A request aiohttp must answer (a GET) on the same connection, then a predict again.
        s.sendall(b"GET /v1/models/hpt HTTP/1.1\r\nHost: h\r\n\r\n")
        status, _, out = read_answer(s, buf)
        assert status == 200 and b"AVAILABLE" in out
        s.sendall(call(port, "/v1/models/hpt:predict", b'{"instances": [4.0]}'))
        status, _, out = read_answer(s, buf)
        assert status == 200 and b"4.0" in out
    assert counter(fast, "tfso_rest_fast_path_requests_total") - before == 20


def test_pipelined_and_split_requests_go_through_aiohttp_in_order(servers) -> None:
    fast, _ = servers
    port = fast.rest_port
    one = call(port, "/v1/models/hpt:predict", b'{"instances": [2.0]}')
    two = call(port, "/v1/models/hpt:predict", b'{"instances": [6.0]}')
    answers = exchange(port, one + two, answers=2)
    assert [a[0] for a in answers] == [200, 200]
    assert b"3.0" in answers[0][2] and b"5.0" in answers[1][2]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(one[:-5])
        s.sendall(one[-5:])
        status, _, out = read_answer(s, bytearray())
        assert status == 200 and b"3.0" in out


def test_connection_close_is_honoured(servers) -> None:
    fast, _ = servers
    port = fast.rest_port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(call(port, "/v1/models/hpt:predict", b'{"instances": [2.0]}', "Connection: close\r\n"))
        buf = bytearray()
        status, headers, _ = read_answer(s, buf)
        assert status == 200 and headers["connection"] == "close"
        assert s.recv(100) == b"" and not buf  # closed by the server


# A waiting call takes the batched lane (server/rest_lane.py) unless something about it needs the
# general path, which goes on in a task: the columnar format does (the lane takes rows only).
WAYS = {"lane": b'{"instances": [%s]}', "task": b'{"inputs": [%s]}'}
LANE = "tfso_rest_fast_lane_requests_total"


def body(way: str, x: float) -> bytes:
    return WAYS[way] % str(x).encode()


@pytest.mark.parametrize("way", WAYS)
def test_calls_that_wait_for_a_batch_are_answered_in_order(root: Path, way: str) -> None:
    """With batching every run waits: the fast path answers from the batch (the lane) or hands
    the call to a task, and holds the connection's later bytes until it has answered."""
    extra = ("--enable_batching", f"--batching_parameters_file={root / 'batching.config'}")
    with ServerProcess(args(root, *extra)) as srv:
        srv.wait_until_available("hpt", [1])
        port = srv.rest_port
        before = counter(srv, "tfso_rest_fast_path_requests_total")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            buf = bytearray()
            for i in range(5):
                s.sendall(call(port, "/v1/models/hpt:predict", body(way, float(i))))
                status, _, out = read_answer(s, buf)
                assert status == 200 and str(0.5 * i + 2.0).encode() in out
            # The next request sent before the answer to this one: answered after it, in order.
            s.sendall(call(port, "/v1/models/hpt:predict", body(way, 8.0)))
            s.sendall(call(port, "/v1/models/hpt:predict", body(way, 10.0)))
            first, second = read_answer(s, buf), read_answer(s, buf)
            assert b"6.0" in first[2] and b"7.0" in second[2]
        assert counter(srv, "tfso_rest_fast_path_requests_total") - before >= 5
        assert (counter(srv, LANE) >= 5) == (way == "lane")


def waiting_batches(folder: Path, micros: int) -> tuple[str, str]:
    """Flags for batches that close `micros` after their first call: a fast-path call waits."""
    path = folder / f"wait-{micros}.config"
    path.write_text(f"max_batch_size {{ value: 64 }}\nbatch_timeout_micros {{ value: {micros} }}\n"
                    "num_batch_threads { value: 1 }\n")  # fmt: skip
    return "--enable_batching", f"--batching_parameters_file={path}"


@pytest.mark.parametrize("way", WAYS)
def test_the_deadline_holds_on_the_fast_path(root: Path, tmp_path: Path, way: str) -> None:
    """A call stuck in a batching queue past --rest_api_timeout_in_ms gets TF Serving's 504; a
    call that came later on another connection gets its own when its own deadline passes."""
    extra = (*waiting_batches(tmp_path, 5_000_000), "--rest_api_timeout_in_ms=300")
    with ServerProcess(args(root, *extra)) as srv:
        srv.wait_until_available("hpt", [1])
        port = srv.rest_port
        with socket.create_connection(("127.0.0.1", port), timeout=30) as first:
            first.sendall(call(port, "/v1/models/hpt:predict", body(way, 1.0)))
            [(status, _, out)] = exchange(port, call(port, "/v1/models/hpt:predict", body(way, 2.0)))
            assert (status, out) == (504, b'{\n    "error": "Deadline Exceeded"\n}')
            status, _, out = read_answer(first, bytearray())
            assert (status, out) == (504, b'{\n    "error": "Deadline Exceeded"\n}')
        assert counter(srv, "tfso_rest_fast_path_requests_total") == 2
        assert counter(srv, LANE) == (2 if way == "lane" else 0)
        page = urllib.request.urlopen(srv.rest_url + PROM, timeout=10).read().decode()
        assert re.search(r'^:tensorflow:serving:request_count\{model_name="hpt",status="DEADLINE_EXCEEDED"\} 2$',
                         page, re.MULTILINE), page  # fmt: skip


@pytest.mark.parametrize("way", WAYS)
def test_a_call_in_flight_is_answered_before_the_server_stops(root: Path, tmp_path: Path, way: str) -> None:
    """SIGTERM while a fast-path call waits for its batch: it still gets its answer, then the
    server exits cleanly (aiohttp's graceful stop waits for it like for its own requests)."""
    import signal

    from tests.helpers.server import wait_until

    extra = waiting_batches(tmp_path, 1_500_000)
    with ServerProcess(args(root, *extra)) as srv:
        srv.wait_until_available("hpt", [1])
        port = srv.rest_port
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(call(port, "/v1/models/hpt:predict", body(way, 4.0)))
            wait_until(lambda: counter(srv, "tfso_rest_fast_path_requests_total") == 1,
                       timeout_s=30, what="the call to reach the server")  # fmt: skip
            assert counter(srv, LANE) == (1 if way == "lane" else 0)
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGTERM)
            status, _, out = read_answer(s, bytearray())
            assert status == 200 and b"4.0" in out
        assert srv.proc.wait(60) == 0


@pytest.mark.parametrize("way", WAYS)
def test_a_request_sent_while_the_call_before_waits_is_answered_after_it(
    root: Path, tmp_path: Path, way: str
) -> None:
    """The second request arrives (in its own read) while the first waits 300 ms for its batch:
    it is kept, then taken by the fast path from inside the first call's task once that one has
    answered; both answers come in order, and neither meets the deadline's 504."""
    extra = (*waiting_batches(tmp_path, 300_000), "--rest_api_timeout_in_ms=20000")
    with ServerProcess(args(root, *extra)) as srv:
        srv.wait_until_available("hpt", [1])
        port = srv.rest_port
        before = counter(srv, "tfso_rest_fast_path_requests_total")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(call(port, "/v1/models/hpt:predict", body(way, 2.0)))
            s.settimeout(0.1)
            with pytest.raises(TimeoutError):  # the first call still waits for its batch
                s.recv(1)
            s.settimeout(30)
            s.sendall(call(port, "/v1/models/hpt:predict", body(way, 4.0)))
            buf = bytearray()
            first, second = read_answer(s, buf), read_answer(s, buf)
        assert (first[0], second[0]) == (200, 200)
        assert b"3.0" in first[2] and b"4.0" in second[2], (first, second)
        assert counter(srv, "tfso_rest_fast_path_requests_total") - before == 2
        assert counter(srv, LANE) == (2 if way == "lane" else 0)
