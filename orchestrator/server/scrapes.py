"""Kept-alive Prometheus scrape connections, answered on a thread of their own (#13).

Under load the REST event loop runs a whole round of predict handlers per iteration, so a scrape
answered on the loop waits for that round: tens of milliseconds with a few busy connections. Once
a connection has sent a plain scrape (server.rest's fast path), the loop hands its socket here,
and from then on each scrape on it is answered as soon as it arrives: this thread sleeps in
`select` without the GIL and needs it only to render the page. The thread takes a request only
when it sees all of it, unread, as one plain scrape (`MSG_PEEK`); anything else (another request,
half a request, pipelining) is left unread and the socket goes back to the event loop, which then
reads it in order as a fresh connection. Idle connections close after the loop's keep-alive time.

TFS_SCRAPE_THREAD=0 keeps every scrape on the event loop (for comparison in bench/scrape.py);
TFS_SWITCH_INTERVAL_MS (default 0.5) is the GIL switch interval set once the thread runs.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 5.0  # a scraper that does not read its page loses the connection, not the thread
# How long the serving thread may keep the GIL while this one waits to answer a scrape. Python's
# default (5 ms) alone would use up the 5 ms a scrape is given under load.
SWITCH_INTERVAL_MS = 0.5


def switch_interval_s() -> float:
    """TFS_SWITCH_INTERVAL_MS (env): the GIL switch interval set once the scrape thread runs."""
    text = os.environ.get("TFS_SWITCH_INTERVAL_MS", "")
    try:
        value = float(text) if text else SWITCH_INTERVAL_MS
    except ValueError:
        value = -1.0
    if not 0 < value <= 1000:
        raise ValueError(
            f"TFS_SWITCH_INTERVAL_MS={text!r} is not a number of milliseconds in (0, 1000]: "
            f"set it like TFS_SWITCH_INTERVAL_MS=0.5, or unset it for {SWITCH_INTERVAL_MS}"
        )
    return value / 1000


def enabled() -> bool:
    return os.environ.get("TFS_SCRAPE_THREAD", "1") != "0"


class ScrapeThread:
    """Owns handed-over scrape connections.

    `parse(data)` returns (request id given, close after) for one complete plain scrape, else
    None; `reply(given, close)` builds the answer; `give_back(sock)` is called on this thread for
    a socket whose next request is not a plain scrape, and must return it to the event loop."""

    def __init__(
        self,
        parse: Callable[[bytes], tuple[str | None, bool] | None],
        reply: Callable[[str | None, bool], bytes],
        give_back: Callable[[socket.socket], None],
        idle_s: float,
    ) -> None:
        self._parse = parse
        self._reply = reply
        self._give_back = give_back
        self._idle_s = idle_s
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._new: list[tuple[socket.socket, str | None]] = []
        self._lock = threading.Lock()
        self.closed = False
        self._thread: threading.Thread | None = None
        self._switch_s = switch_interval_s()  # read now: a bad value fails the start, not a scrape

    def adopt(self, sock: socket.socket, given: str | None) -> bool:
        """Take `sock` (whose scrape, already read, asked for request id `given`); False once
        closed, when the caller keeps the connection."""
        with self._lock:
            if self.closed:
                return False
            self._new.append((sock, given))
            if self._thread is None:
                sys.setswitchinterval(self._switch_s)
                self._thread = threading.Thread(target=self._run, name="tfs-scrapes", daemon=True)
                self._thread.start()
        self._wake_w.send(b"\0")
        return True

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            thread = self._thread
        self._wake_w.send(b"\0")
        if thread is not None:
            thread.join(timeout=5)
        if thread is None or not thread.is_alive():
            for key in list(self._sel.get_map().values()):
                if key.fileobj is not self._wake_r:
                    _close(key.fileobj)  # type: ignore[arg-type]
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _run(self) -> None:
        seen: dict[socket.socket, float] = {}
        while True:
            with self._lock:
                closed, new, self._new = self.closed, self._new, []
            for sock, given in new:
                sock.settimeout(SEND_TIMEOUT_S)
                if self._answer(sock, given, close=False):
                    self._sel.register(sock, selectors.EVENT_READ, None)
                    seen[sock] = time.monotonic()
                else:
                    _close(sock)
            if closed:
                return
            for key, _ in self._sel.select(timeout=1.0):
                if key.fileobj is self._wake_r:
                    _drain(self._wake_r)
                    continue
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                seen[conn] = time.monotonic()
                outcome = self._serve(conn)
                if outcome != _KEEP:
                    self._sel.unregister(conn)
                    del seen[conn]
                    if outcome == _BACK:
                        self._hand_back(conn)
                    else:
                        _close(conn)
            now = time.monotonic()
            for sock, last in list(seen.items()):
                if now - last > self._idle_s:
                    self._sel.unregister(sock)
                    del seen[sock]
                    _close(sock)

    def _serve(self, sock: socket.socket) -> str:
        """Answer the scrape waiting on `sock`: _KEEP it here, _BACK to the loop, or _DROP it."""
        try:
            data = sock.recv(65536, socket.MSG_PEEK)
        except OSError:
            return _DROP
        if not data:  # the scraper closed
            return _DROP
        parsed = self._parse(data)
        if parsed is None:
            return _BACK
        try:
            sock.recv(len(data))  # exactly the peeked request: nothing else can be queued before
        except OSError:
            return _DROP
        given, close = parsed
        return _KEEP if self._answer(sock, given, close) and not close else _DROP

    def _answer(self, sock: socket.socket, given: str | None, close: bool) -> bool:
        """Send one page; False when the connection cannot go on."""
        try:
            sock.sendall(self._reply(given, close))
        except OSError:  # reset, or not read for SEND_TIMEOUT_S
            return False
        except Exception:  # rendering failed: the connection ends, the thread stays
            log.exception("answering a scrape failed")
            return False
        return True

    def _hand_back(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            self._give_back(sock)
        except Exception:
            log.exception("handing a connection back to the event loop failed")
            _close(sock)


_KEEP, _BACK, _DROP = "keep", "back", "drop"


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            if not sock.recv(4096):
                return
        except (BlockingIOError, InterruptedError):
            return


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
