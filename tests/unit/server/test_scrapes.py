"""The scrape thread (server.scrapes) on socket pairs: it answers whole plain scrapes itself,
hands anything else back unread, and closes its connections when closed. The live server side
is tests/integration/server/test_scrape.py."""

from __future__ import annotations

import queue
import socket
import sys

import pytest

from orchestrator.server import scrapes
from orchestrator.server.rest import _FastScrape

PATH = "/monitoring/prometheus/metrics"
SCRAPE = f"GET {PATH} HTTP/1.1\r\nHost: h\r\n".encode()


@pytest.fixture
def thread():
    fast = _FastScrape(PATH, lambda path: f"page from {path}\n", cors=False)
    back: queue.Queue[socket.socket] = queue.Queue()
    interval = sys.getswitchinterval()
    t = scrapes.ScrapeThread(fast.parse, lambda g, c: fast.reply(g, c, "thread"), back.put, 60.0)
    yield t, back
    t.close()
    sys.setswitchinterval(interval)


def read_reply(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before an answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    size = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")))  # fmt: skip
    while len(body) < size:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_answers_the_first_scrape_and_the_ones_after(thread) -> None:
    t, back = thread
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.settimeout(10)
        assert t.adopt(ours, "first")
        assert sys.getswitchinterval() == pytest.approx(scrapes.SWITCH_INTERVAL_MS / 1000)
        reply = read_reply(theirs)
        assert b"X-Request-Id: first" in reply and reply.endswith(b"page from thread\n")
        for i in range(3):
            theirs.sendall(SCRAPE + f"X-Request-Id: again-{i}\r\n\r\n".encode())
            assert f"X-Request-Id: again-{i}".encode() in read_reply(theirs)
        assert back.empty()


def test_anything_else_goes_back_unread(thread) -> None:
    t, back = thread
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.settimeout(10)
        assert t.adopt(ours, None)
        read_reply(theirs)
        request = SCRAPE + b"\r\n" + b"POST /v1/models/m:predict HTTP/1.1\r\n"  # pipelined
        theirs.sendall(request)
        returned = back.get(timeout=10)
        with returned:
            assert returned.recv(65536, socket.MSG_PEEK) == request  # nothing consumed
            assert not returned.getblocking()  # ready for the event loop


def test_connection_close_and_closing_the_thread_end_connections(thread) -> None:
    t, _ = thread
    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    with first_peer, second_peer:
        for peer in (first_peer, second_peer):
            peer.settimeout(10)
        assert t.adopt(first, None) and t.adopt(second, None)
        read_reply(first_peer), read_reply(second_peer)
        first_peer.sendall(SCRAPE + b"Connection: close\r\n\r\n")
        assert b"Connection: close" in read_reply(first_peer)
        assert first_peer.recv(1) == b""  # closed after the answer
        t.close()
        assert second_peer.recv(1) == b""
        spare, spare_peer = socket.socketpair()
        with spare, spare_peer:
            assert not t.adopt(spare, None)  # a closed thread takes nothing


def test_a_bad_switch_interval_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("fast", "0", "-1", "5000", "nan"):
        monkeypatch.setenv("TFS_SWITCH_INTERVAL_MS", bad)
        with pytest.raises(ValueError, match="TFS_SWITCH_INTERVAL_MS"):
            scrapes.switch_interval_s()
    monkeypatch.setenv("TFS_SWITCH_INTERVAL_MS", "2")
    assert scrapes.switch_interval_s() == 0.002
