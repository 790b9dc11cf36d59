"""The REST predict fast path's parser and answer (rest._FastPredict): which requests it takes and
which it leaves to aiohttp. The live server side is tests/integration/server/test_rest_fast.py."""

from __future__ import annotations

import pytest

from orchestrator.server.rest import _FastPredict

BODY = b'{"instances": [[1.0, 2.0]]}'


class _Api:
    cors = False
    max_body = 1000
    core = None
    timeout_s = None


def fast(cors: bool = False) -> _FastPredict:
    api = _Api()
    api.cors = cors
    return _FastPredict(api)  # type: ignore[arg-type]


def request(target: bytes = b"/v1/models/m:predict", headers: bytes = b"", body: bytes = BODY) -> bytes:
    return (
        b"POST " + target + b" HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
        + b"Content-Length: %d\r\n" % len(body) + headers + b"\r\n" + body
    )


def split(reply: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return status, {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, body


@pytest.mark.parametrize(
    ("target", "groups"),
    [
        (b"/v1/models/m:predict", ("m", None, None, "predict")),
        (b"/v1/models/m/versions/7:classify", ("m", "7", None, "classify")),
        (b"/v1/models/m/labels/stable:REGRESS", ("m", None, "stable", "REGRESS")),
    ],
)
def test_a_plain_call_is_taken_with_its_body(target: bytes, groups: tuple) -> None:
    parsed = fast().parse(request(target, b"X-Request-Id: r-1\r\n"))
    assert parsed is not None
    m, body, given, close = parsed
    assert m.groups() == groups and body == BODY and given == "r-1" and not close


def test_connection_close_and_keep_alive() -> None:
    parsed = fast().parse(request(headers=b"Connection: close\r\n"))
    assert parsed is not None and parsed[3] is True
    parsed = fast().parse(request(headers=b"Connection: keep-alive\r\n"))
    assert parsed is not None and parsed[3] is False


@pytest.mark.parametrize(
    "data",
    [
        request()[:-1],  # the body is not all here yet
        request() + request(),  # pipelined: aiohttp keeps the order
        request().replace(b"\r\n\r\n", b"\r\n"),  # headers not complete
        request().replace(b"HTTP/1.1", b"HTTP/1.0"),
        request().replace(b"Host: h\r\n", b""),  # HTTP/1.1 needs a Host
        request().replace(b"Content-Length: 27\r\n", b""),  # no length
        request(headers=b"Content-Length: 27\r\n"),  # two lengths
        request().replace(b"Content-Length: 27", b"Content-Length: +27"),
        request(headers=b"Transfer-Encoding: chunked\r\n"),
        request(headers=b"Expect: 100-continue\r\n"),
        request(headers=b"Connection: Upgrade\r\nUpgrade: h2c\r\n"),
        request(headers=b"Content-Encoding: gzip\r\n"),  # inflated under the limit by aiohttp's path
        request(headers=b"Bad Name: x\r\n"),  # not a token
        request(headers=b" folded\r\n"),  # obsolete line folding
        request(headers=b"X-A: a\x00b\r\n"),  # a control character
        request(headers=b"Host: other\r\n"),  # a field it reads, twice
        request(headers=b"X-Request-Id: a\r\nX-Request-Id: b\r\n"),
        request(b"/v1/models/m:predict?x=1"),  # a query
        request(b"/v1/models/%6D:predict"),  # percent-escapes: aiohttp decodes them
        request(b"/v1/models/m/../m:predict"),  # dot segments
        request(b"/v1/models/m:explain"),  # not an inference path
        request(b"/v1/models/m/versions/x:predict"),
        request(body=b"x" * 1001),  # over the body limit: aiohttp answers 413
    ],
)
def test_anything_else_goes_to_aiohttp(data: bytes) -> None:
    assert fast().parse(data) is None


def test_anything_else_stays_refused_once_its_head_is_remembered() -> None:
    """The parser remembers what it made of a header block: the same bytes give the same answer
    the second time, and a remembered plain head still checks its body's length."""
    parser = fast()
    for data in [request(), request(headers=b"Transfer-Encoding: chunked\r\n"), request()[:-1],
                 request() + request(), request(b"/v1/models/m:explain")]:  # fmt: skip
        first = parser.parse(data)
        again = parser.parse(data)
        assert (first is None) == (again is None)
        if first is not None and again is not None:
            assert first[0].groups() == again[0].groups() and first[1:] == again[1:]
    assert parser.parse(request()) is not None
    assert parser.parse(request()[:-1]) is None and parser.parse(request() + b"x") is None


def test_the_remembered_heads_are_bounded() -> None:
    from orchestrator.server import rest

    parser = fast()
    for i in range(rest._HEADS_MAX * 3):
        assert parser.parse(request(headers=b"X-Request-Id: r-%d\r\n" % i)) is not None
        assert len(parser.heads) <= rest._HEADS_MAX
    big = request(headers=b"X-Pad: " + b"p" * rest._HEAD_KEPT_BYTES + b"\r\n")
    assert parser.parse(big) is not None
    assert all(len(h) <= rest._HEAD_KEPT_BYTES for h in parser.heads)


def test_identity_encoding_is_plain() -> None:
    assert fast().parse(request(headers=b"Content-Encoding: identity\r\n")) is not None


def test_the_answer_carries_what_aiohttp_would_send() -> None:
    status, headers, body = split(fast().reply(404, b'{"error": "x"}', "rid-1", False))
    assert status == "HTTP/1.1 404 Not Found"
    assert body == b'{"error": "x"}'
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(body))
    assert headers["x-request-id"] == "rid-1"
    assert headers["server"].startswith("Python/") and "date" in headers
    assert "connection" not in headers and "access-control-allow-origin" not in headers


def test_close_and_cors_headers() -> None:
    _, headers, _ = split(fast(cors=True).reply(200, b"{}", "r", True))
    assert headers["connection"] == "close"
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-methods"] == "POST, GET"
