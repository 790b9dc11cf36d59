"""The metrics scrape's fast path (rest._FastScrape): what it answers itself and what it leaves
to aiohttp's normal path. The live server side is tests/integration/server/test_scrape.py."""

from __future__ import annotations

import pytest

from orchestrator.server.rest import _FastScrape

PATH = "/monitoring/prometheus/metrics"
GET = f"GET {PATH} HTTP/1.1\r\n".encode()


def fast(cors: bool = False) -> _FastScrape:
    return _FastScrape(PATH, lambda path: "# TYPE x counter\nx 1\n", cors)


def split(reply: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return status, {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, body


def test_a_plain_scrape_is_answered_with_the_page_and_the_callers_request_id() -> None:
    f = fast()
    parsed = f.parse(GET + b"Host: h\r\nAccept: */*\r\nX-Request-Id: scrape-1\r\n\r\n")
    assert parsed == ("scrape-1", False)
    reply, close = f.reply(*parsed), parsed[1]
    status, headers, body = split(reply)
    assert status == "HTTP/1.1 200 OK" and not close
    assert body == b"# TYPE x counter\nx 1\n"
    assert headers["content-length"] == str(len(body))
    assert headers["content-type"] == "text/plain"
    assert headers["x-request-id"] == "scrape-1"
    assert "date" in headers and "access-control-allow-origin" not in headers


def test_connection_close_cors_and_a_bad_request_id() -> None:
    f = fast(cors=True)
    parsed = f.parse(GET + b"Host: h\r\nConnection: close\r\nX-Request-Id: a b\r\n\r\n")
    assert parsed is not None
    reply, close = f.reply(*parsed), parsed[1]
    _, headers, _ = split(reply)
    assert close and headers["connection"] == "close"
    assert headers["access-control-allow-origin"] == "*"
    assert len(headers["x-request-id"]) == 16 and headers["x-request-id"] != "a b"  # a new one


@pytest.mark.parametrize(
    "data",
    [
        GET + b"Host: h\r\n",  # headers not complete yet
        GET + b"Host: h\r\n\r\n" + GET + b"\r\n",  # pipelined: order matters, normal path
        GET + b"\r\n",  # no Host: HTTP/1.1 needs one (aiohttp answers 400)
        GET + b"Accept: */*\r\n\r\n",
        GET + b"Content-Length: 3\r\n\r\nabc",  # a body
        GET + b"Content-Length: 3\r\n\r\n",
        GET + b"Transfer-Encoding: chunked\r\n\r\n",
        GET + b"Expect: 100-continue\r\n\r\n",
        GET + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        GET + b"Host : h\r\n\r\n",  # whitespace before the colon: aiohttp refuses it with 400
        GET + b"Host: h\r\nContent-Length: 3\r\n\r\n",
        GET + b"no colon here\r\n\r\n",
    ],
)
def test_anything_unusual_is_left_to_the_normal_path(data: bytes) -> None:
    assert fast().parse(data) is None


def test_only_the_exact_request_line_is_fast() -> None:
    f = fast()
    assert f.prefix == GET
    for other in (b"GET /monitoring/prometheus/metrics?x=1 HTTP/1.1\r\n",
                  b"GET /monitoring/prometheus/metrics HTTP/1.0\r\n",
                  b"HEAD /monitoring/prometheus/metrics HTTP/1.1\r\n"):
        assert not (other + b"\r\n").startswith(f.prefix)
        assert f.parse(other + b"Host: h\r\n\r\n") is None
