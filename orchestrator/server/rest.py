"""TF Serving's HTTP/REST API on aiohttp (model_servers/http_rest_api_handler.cc).

    GET  /v1/models/{m}[/versions/{v}|/labels/{l}]            model status
    GET  /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata   signature defs
    POST /v1/models/{m}[/versions/{v}|/labels/{l}]:(predict|classify|regress)
    GET  <prometheus path>                                     metrics, when enabled

Paths are case-insensitive, errors are `{"error": "..."}` with TF Serving's HTTP codes. Request
bodies above TFS_MAX_REQUEST_BYTES (orchestrator.limits) get 413; the limit holds on the body as
it is read and, for `Content-Encoding: gzip | deflate`, as it is inflated, so a small compressed
bomb never grows past it. Other encodings get 415. A version in the path is ASCII digits.

A plain scrape of the metrics page (`GET <path> HTTP/1.1`, no body, on an idle connection) is
answered right where its bytes arrive (`_Handler.data_received`), not as a task queued behind every
request in flight: under load the event loop runs a whole round of predict handlers per
iteration, and a scrape that waited for its turn took as long as they did (#13). Anything else
about such a request (HTTP/1.0, a body, pipelining, Expect, Upgrade) takes the normal path. A kept-
alive connection that sent such a scrape then moves to the scrape thread (server.scrapes), which
answers its later scrapes without waiting for the loop at all.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import inspect
import logging
import os
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from aiohttp import ClientPayloadError, HttpVersion11, web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from orchestrator import limits
from orchestrator.logs import REQUEST_ID_HEADER, request_id
from orchestrator.server import json_tensor as jt
from orchestrator.server import scrapes
from orchestrator.server.config import MonitoringOptions
from orchestrator.server.core import Core
from orchestrator.server.metrics import CURRENT_CALL
from orchestrator.server.rest_lane import Answer, Lane, outcome
from orchestrator.server.scrapes import ScrapeThread
from orchestrator.server.status import ServingStatus, invalid

log = logging.getLogger("tfs.rest")

_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
DEFAULT_MAX_BODY = limits.DEFAULTS.max_request_bytes
_JSON = "application/json"
# What a client that goes away mid-body looks like to the payload reader.
_DISCONNECTS = (
    ClientPayloadError,
    ConnectionError,
    asyncio.IncompleteReadError,
    HttpProcessingError,
)


# aiohttp's own default, which the scrape thread keeps for the connections it takes over.
_KEEPALIVE_S = inspect.signature(RequestHandler.__init__).parameters["keepalive_timeout"].default


def max_body_bytes() -> int:
    return limits.current().max_request_bytes


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    v = int(text)
    if v >= 2**63:
        raise invalid(f"Failed to convert version: {text} to numeric.")
    return v


class RestApi:
    def __init__(
        self,
        core: Core,
        *,
        timeout_ms: int = 30000,
        monitoring: MonitoringOptions | None = None,
        cors: bool = False,
    ) -> None:
        self.core = core
        self.timeout_s = timeout_ms / 1000 if timeout_ms > 0 else None
        self.monitoring = monitoring or MonitoringOptions()
        self.cors = cors
        self.max_body = max_body_bytes()
        # The Prometheus page; a worker process sets one that sums every worker's counts. It is
        # called on the event loop or the scrape thread, so it must not block (no round trip to
        # another process).
        self.metrics_page: Callable[[], str] | None = None
        self.scrapes: ScrapeThread | None = None
        self._page_lock = threading.Lock()  # the loop and the scrape thread both render
        self._resumed: set[asyncio.Task] = set()
        # Scrapes answered by each path: aiohttp's handler, the loop's fast path, the thread.
        self.answered = {"normal": 0, "fast": 0, "thread": 0}
        self.fast_calls = 0  # inference calls the REST fast path answered (_FastPredict)
        self.lane: Lane | None = None  # ...and of those, the ones its batched lane took
        if self.monitoring.enable and core.metrics.versions is not None:  # a tfso_* metric
            core.metrics.renderers.append(self._render_answered)

    def page(self, path: str = "normal") -> str:
        with self._page_lock:
            self.answered[path] += 1
            if self.metrics_page is not None:
                return self.metrics_page()
            return self.core.metrics.render()

    def _render_answered(self, out: list[str]) -> None:
        name = "tfso_metrics_scrapes_total"
        out.append(f"# TYPE {name} counter")
        out.extend(f'{name}{{path="{k}"}} {n}' for k, n in self.answered.items())
        out.append("# TYPE tfso_rest_fast_path_requests_total counter")
        out.append(f"tfso_rest_fast_path_requests_total {self.fast_calls}")
        out.append("# TYPE tfso_rest_fast_lane_requests_total counter")  # answered from the batch
        out.append(f"tfso_rest_fast_lane_requests_total {self.lane.calls if self.lane else 0}")

    def close(self) -> None:
        """Close the scrape thread's connections (the event loop's are aiohttp's to close)."""
        if self.scrapes is not None:
            self.scrapes.close()

    def server(self) -> web.Server:
        """aiohttp's low-level server: no router, middlewares or signals before `handle`."""
        loop = asyncio.get_running_loop()
        max_body = self.max_body

        def request_factory(
            message: Any, payload: Any, protocol: Any, writer: Any, task: Any
        ) -> web.BaseRequest:
            return web.BaseRequest(
                message, payload, protocol, writer, task, loop, client_max_size=max_body
            )

        fast = _FastScrape(self.monitoring.path, self.page, self.cors) if self.monitoring.enable else None
        # Bodies are inflated in `_body`, under the size limit, never by the protocol.
        predict = _FastPredict(self) if fast_enabled() else None
        self.lane = predict.lane if predict is not None else None
        server = _Server(
            self._serve, fast, None, predict, request_factory=request_factory, access_log=None,
            auto_decompress=False,
        )  # fmt: skip
        if fast is not None and scrapes.enabled():

            def give_back(sock: socket.socket) -> None:  # on the scrape thread
                loop.call_soon_threadsafe(resume, sock)

            def resume(sock: socket.socket) -> None:
                if self.scrapes is None or self.scrapes.closed:
                    sock.close()
                    return
                task = loop.create_task(loop.connect_accepted_socket(server, sock))
                self._resumed.add(task)
                task.add_done_callback(self._resumed.discard)

            keepalive = float(server._kwargs.get("keepalive_timeout", _KEEPALIVE_S))
            self.scrapes = scrapes.ScrapeThread(
                fast.parse, lambda given, close: fast.reply(given, close, "thread"), give_back,
                keepalive,
            )  # fmt: skip
            server._scrapes = self.scrapes
        return server

    async def _serve(self, request: web.BaseRequest) -> web.Response:
        expect = request.headers.get("Expect")
        if expect and request.version == HttpVersion11:  # what web.Application does
            if expect.lower() != "100-continue":
                return web.Response(status=417, text=f"Unknown Expect: {expect}")
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
            await request.writer.drain()
        return await self.handle(request)

    def _response(self, status: int, body: bytes, content_type: str = _JSON) -> web.Response:
        resp = web.Response(status=status, body=body, content_type=content_type)
        if self.cors:
            resp.headers["Access-Control-Allow-Origin"] = "*"
            resp.headers["Access-Control-Allow-Methods"] = "POST, GET"
            resp.headers["Access-Control-Allow-Headers"] = "Content-Type"
        return resp

    async def handle(self, request: web.BaseRequest) -> web.Response:
        """Every answer carries X-Request-Id: the caller's, or a new one (see orchestrator.logs)."""
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        response = await self._handle(request, rid)
        response.headers[REQUEST_ID_HEADER] = rid
        return response

    async def _handle(self, request: web.BaseRequest, rid: str) -> web.Response:
        path = request.path
        method = request.method
        if self.monitoring.enable and method == "GET" and path == self.monitoring.path:
            return self._response(200, self.page().encode(), content_type="text/plain")
        m = _PREDICT_RE.fullmatch(path)
        if m and method == "POST":
            status, out = await self.infer(m, request, rid)
            return self._response(status, out)
        start = time.perf_counter()
        model = ""
        try:
            m = _STATUS_RE.fullmatch(path)
            if m and method == "GET":
                model = m.group(1) or ""
                if not model:
                    raise invalid("Missing model name in request.")
                version, label = _version(m.group(2)), m.group(3)
                if m.group(4):
                    out = self._metadata(model, version, label)
                else:
                    out = self._status(model, version, label)
            elif method == "OPTIONS" and self.cors:
                return self._response(200, b"")
            else:
                raise invalid(f"Malformed request: {method} {path}")
        except ServingStatus as e:
            if model:
                self.core.metrics.record_request(model, "", "REST", e.code, 0)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("REST %s %s: %s %s", method, path, e.code, e.message)
            return self._response(e.http_status, jt.error_body(e.message))
        except Exception as e:  # a bug: answer like TF Serving would for an internal error
            log.exception("REST %s %s failed", method, path)
            return self._response(*outcome(e)[:2])
        self.core.metrics.record_request(model, "", "REST", "OK", (time.perf_counter() - start) * 1e6)
        return self._response(200, out)

    async def infer(
        self, m: re.Match[str], source: web.BaseRequest | bytes, rid: str
    ) -> tuple[int, bytes]:
        """(HTTP status, JSON body) of a predict, classify or regress call; `source` is aiohttp's
        request (the body is read here, under the limits) or a body the fast path already has."""
        start = time.perf_counter()
        model, api = m.group(1), m.group(4).lower()
        metrics = self.core.metrics
        call = metrics.begin(model, api, "rest", rid)
        try:
            body = source if isinstance(source, bytes) else await self._body(source)
            out = await within(
                self._predict_like(api, model, _version(m.group(2)), m.group(3), body),
                self.timeout_s,
                in_task=not isinstance(source, bytes),
            )
        except ServingStatus as e:
            metrics.record_request(model, api, "REST", e.code, 0)
            metrics.end(call, e.code, start)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("REST POST %s: %s %s", m.string, e.code, e.message)
            return outcome(e)[:2]
        except asyncio.TimeoutError:
            metrics.record_request(model, api, "REST", "DEADLINE_EXCEEDED", 0)
            metrics.end(call, "DEADLINE_EXCEEDED", start)
            return 504, jt.error_body("Deadline Exceeded")
        except _TooLarge as e:
            metrics.end(call, "RESOURCE_EXHAUSTED", start)
            return 413, jt.error_body(str(e))
        except _BadEncoding as e:
            metrics.end(call, "INVALID_ARGUMENT", start)
            return e.status, jt.error_body(str(e))
        except _Disconnected as e:  # nobody reads this answer; one quiet line, no traceback
            log.info("REST POST %s: client went away mid-body (%s)", m.string, e)
            metrics.end(call, "CANCELLED", start)
            return 400, jt.error_body(str(e))
        except Exception as e:  # a bug: answer like TF Serving would for an internal error
            log.exception("REST POST %s failed", m.string)
            metrics.end(call, "INTERNAL", start)
            return outcome(e)[:2]
        metrics.record_request(model, api, "REST", "OK", (time.perf_counter() - start) * 1e6)
        metrics.end(call, "OK", start)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("REST POST %s: OK in %.3f ms", m.string, (time.perf_counter() - start) * 1e3)
        return 200, out

    async def _body(self, request: web.BaseRequest) -> bytes:
        limit = self.max_body
        length = request.content_length
        if length is not None and length > limit:
            raise _TooLarge(f"Request body of {length} bytes exceeds the limit of {limit} bytes")
        inflater = _Inflater.for_header(request.headers.get("Content-Encoding", ""), limit)
        if inflater is None and length is not None:
            # The common case, a plain body of known length (already under the limit): one read,
            # no copies.
            if length == 0:
                return b""
            try:
                return await request.content.readexactly(length)
            except _DISCONNECTS as e:
                raise _Disconnected(f"request body incomplete: {type(e).__name__}") from None
        body = bytearray()
        raw = 0
        try:
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                raw += len(chunk)
                if raw > limit:
                    raise _TooLarge(f"Request body exceeds the limit of {limit} bytes")
                if inflater is None:
                    body += chunk
                else:
                    inflater.feed(chunk, body)
        except _DISCONNECTS as e:
            raise _Disconnected(f"request body incomplete: {type(e).__name__}") from None
        if inflater is not None:
            inflater.finish()
        return bytes(body)

    async def _predict_like(
        self, api: str, model: str, version: int | None, label: str | None, body: bytes
    ) -> bytes:
        core = self.core
        servable = core.servable(model, version, label)
        doc = jt.loads(body)
        if api == "predict":
            sig, arrays, row = jt.parse_predict(doc, lambda s: core.predict_inputs(servable, s))
            res = await core.predict(servable, sig, arrays)
            return jt.predict_response(res.outputs, row)
        sig, examples = jt.parse_examples(doc, api)
        if api == "classify":
            _, result = await core.classify(servable, sig, examples)
            return jt.classify_response(result)
        _, values = await core.regress(servable, sig, examples)
        return jt.regress_response(values)

    def _status(self, model: str, version: int | None, label: str | None) -> bytes:
        states = self.core.manager.status(model, version, label)
        return jt.proto_json(
            {
                "model_version_status": [
                    {
                        "version": str(vs.version),
                        "state": vs.state,
                        "status": {"error_code": vs.error_code, "error_message": vs.error_message},
                    }
                    for vs in states
                ]
            }
        )

    def _metadata(self, model: str, version: int | None, label: str | None) -> bytes:
        servable = self.core.servable(model, version, label)
        doc: dict[str, Any] = {
            "model_spec": {"name": model, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": {"signature_def": servable.signature_def_map_dict()}},
        }
        return jt.proto_json(doc)


async def within(
    coro: Coroutine[Any, Any, Any], timeout_s: float | None, *, in_task: bool | None = None
) -> Any:
    """`await coro` under a timeout (asyncio.TimeoutError past it), where the timer is armed only
    if `coro` suspends: a predict that runs inline on the loop never suspends, a timeout could
    not interrupt it anyway, and one timer per request was 4 % of the REST path's CPU.

    Driven outside any task (the fast path steps it from a protocol callback), a suspending `coro`
    first yields TO_TASK up to that driver, which goes on in a task (`finish`). `in_task` says
    which of the two the caller is (None: ask asyncio, which costs a lookup a call)."""
    try:
        first = coro.send(None)
    except StopIteration as done:
        return done.value
    # From the first suspension: the inline part before it is microseconds against the timeout.
    deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
    if not (asyncio.current_task() is not None if in_task is None else in_task):
        await _ToTask()
    if deadline is None:
        return await _Resumed(coro, first)
    async with asyncio.timeout_at(deadline):
        return await _Resumed(coro, first)


TO_TASK = object()  # what a coroutine stepped outside a task yields when it must go on in one


class _ToTask:
    def __await__(self) -> Any:
        yield TO_TASK


async def finish(coro: Coroutine[Any, Any, Any], step: Any) -> Any:
    """The rest of `coro`, inside a task, after its first step yielded `step` (TO_TASK, or a
    future it waits on)."""
    if step is TO_TASK:
        try:
            step = coro.send(None)
        except StopIteration as done:
            return done.value
    return await _Resumed(coro, step)


class _Resumed:
    """Awaiting it continues a coroutine whose first step already ran and yielded `first`
    (what `yield from` does, PEP 380), so the rest of it runs under the caller's timeout."""

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro, self.first = coro, first

    def __await__(self) -> Any:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as e:  # CancelledError (the timeout) included: handed inside
                try:
                    value = coro.throw(e)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as done:
                    return done.value


# What RestApi._response adds with --rest_api_enable_cors_support, for answers built by hand.
_CORS = (
    b"Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Methods: POST, GET\r\n"
    b"Access-Control-Allow-Headers: Content-Type\r\n"
)
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[^\x00-\x1f\x7f]|\t)*?)[ \t]*")
# Fields the fast paths read: one of them twice sends the request down aiohttp's path.
_READ = frozenset(
    (b"content-length", b"transfer-encoding", b"content-encoding", b"expect", b"upgrade",
     b"connection", b"x-request-id", b"host")
)  # fmt: skip


def _fields(block: bytes) -> dict[bytes, bytes] | None:
    """A header block's fields by lower-case name (values without surrounding blanks); None for
    a line that is not a plain `name: value` (folding, control characters) or a field in
    _READ that comes twice."""
    fields: dict[bytes, bytes] = {}
    for line in block.split(b"\r\n") if block else ():
        f = _FIELD.fullmatch(line)
        if f is None:
            return None
        name = f.group(1).lower()
        if name in fields and name in _READ:
            return None
        fields.setdefault(name, f.group(2))
    return fields


def _plain(fields: dict[bytes, bytes] | None) -> tuple[str | None, bool] | None:
    """(the request id given, close after) for a header block both fast paths can answer: a
    Host (HTTP/1.1 requires one; aiohttp answers 400 without), and no Transfer-Encoding, Expect
    or Upgrade, which only aiohttp's path handles; None otherwise."""
    if fields is None or b"host" not in fields:
        return None
    if b"transfer-encoding" in fields or b"expect" in fields or b"upgrade" in fields:
        return None
    tokens = {t.strip() for t in fields.get(b"connection", b"").lower().split(b",")}
    if b"upgrade" in tokens:
        return None
    given = fields.get(b"x-request-id")
    return (None if given is None else given.decode("latin-1")), b"close" in tokens


class _FastScrape:
    """The answer to a plain `GET <metrics path> HTTP/1.1`, built without aiohttp's request
    machinery; None for anything it does not fully understand (the normal path answers that)."""

    def __init__(self, path: str, page: Callable[[str], str], cors: bool) -> None:
        self.prefix = b"GET " + path.encode("ascii") + b" HTTP/1.1\r\n"
        self.page = page
        self.extra = _CORS if cors else b""

    def parse(self, data: bytes) -> tuple[str | None, bool] | None:
        """(the request id given, close the connection after) for exactly one plain scrape."""
        if not data.startswith(self.prefix):
            return None
        end = data.find(b"\r\n\r\n")
        if end != len(data) - 4:  # incomplete, pipelined, or a body follows
            return None
        fields = _fields(data[len(self.prefix) : end] if end >= len(self.prefix) else b"")
        if fields is None or fields.get(b"content-length", b"0") != b"0":  # a scrape has no body
            return None
        return _plain(fields)

    def reply(self, given: str | None, close: bool, path: str = "fast") -> bytes:
        """The answer; `path` names who answers, for tfso_metrics_scrapes_total."""
        body = self.page(path).encode()
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nDate: %s\r\n%s%s: %s\r\n%s\r\n"
            % (
                len(body),
                _http_date(),
                self.extra,
                _RID_HEADER,
                request_id(given).encode(),
                b"Connection: close\r\n" if close else b"",
            )
        )
        return head + body


class _FastPredict:
    """A plain `POST /v1/models/...:predict|classify|regress HTTP/1.1` whose whole body arrived
    in one read, answered without aiohttp's request machinery, which was about half of a small
    model's REST CPU (#17). The work itself is `RestApi.infer`, as on the normal path. `parse`
    returns None for anything it does not fully understand (a query, percent-escapes, dot
    segments, chunked or encoded bodies, Expect, Upgrade, pipelining, a body in several reads,
    a header it cannot read): aiohttp answers those. TFS_REST_FAST=0 turns it off."""

    PREFIX = b"POST /v1/models/"
    _TARGET = re.compile(rb"/v1/models/[!$&'()*+,\-./0-9:;=@A-Z_a-z~]*")

    def __init__(self, api: RestApi) -> None:
        self.api = api
        self.extra = _CORS if api.cors else b""
        self.lane = Lane(api.core, api.timeout_s, self.reply)
        # What `_head` made of recent header blocks: a client sends the same one call after call.
        self.heads: dict[bytes, tuple[re.Match[str], int, str | None, bool] | Literal[False]] = {}

    def parse(self, data: bytes) -> tuple[re.Match[str], bytes, str | None, bool] | None:
        """(path match, body, the request id given, close after) for one complete plain call."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = data[:end]
        heads = self.heads
        known = heads.get(head)
        if known is None:  # not seen yet (False: seen, and not a plain call)
            known = self._head(head) or False
            if end <= _HEAD_KEPT_BYTES:
                if len(heads) >= _HEADS_MAX:
                    heads.clear()
                heads[head] = known
        if known is False or len(data) - end - 4 != known[1]:  # more to come, or pipelined
            return None
        m, _length, given, close = known
        return m, data[end + 4 :], given, close

    def _head(self, data: bytes) -> tuple[re.Match[str], int, str | None, bool] | None:
        """(path match, body length, the request id given, close after) for a plain header
        block (request line included), else None."""
        end = len(data)
        eol = data.find(b"\r\n")
        if eol < 0:
            eol = end
        line = data[:eol]
        if not line.endswith(b" HTTP/1.1"):
            return None
        target = line[5:-9]
        if b"/." in target or not self._TARGET.fullmatch(target):
            return None
        m = _PREDICT_RE.fullmatch(target.decode("ascii"))
        if m is None:
            return None
        fields = _fields(data[eol + 2 : end] if eol < end else b"")
        plain = _plain(fields)
        if fields is None or plain is None:
            return None
        if fields.get(b"content-encoding", b"").lower() not in (b"", b"identity"):
            return None
        text = fields.get(b"content-length", b"")
        if not text.isdigit() or int(text) > self.api.max_body:
            return None
        return m, int(text), *plain

    def serve(
        self, handler: _Handler, m: re.Match[str], body: bytes, given: str | None, close: bool
    ) -> None:
        rid = request_id(given)
        self.api.fast_calls += 1
        if self.lane.take(handler, m, body, rid, close):
            return
        coro = self.api.infer(m, body, rid)
        try:
            step = coro.send(None)
        except StopIteration as done:
            status, out = done.value
            CURRENT_CALL.set(None)  # this context is the connection's, shared by its requests
            handler.answer(self.reply(status, out, rid, close), close)
            return
        task = asyncio.get_running_loop().create_task(self._finish(coro, step, handler, rid, close))
        CURRENT_CALL.set(None)  # the task copied the context with the call in it
        handler.hold(task)

    async def _finish(
        self, coro: Coroutine[Any, Any, Any], step: Any, handler: _Handler, rid: str, close: bool
    ) -> None:
        """The rest of a call that suspended, answered from inside its task (no done-callback
        hop through the loop)."""
        try:
            status, out = await finish(coro, step)
        except asyncio.CancelledError:
            handler.answer(self.reply(500, jt.error_body("Cancelled"), rid, True), True)
            raise
        except Exception as error:  # infer() answers every Exception; this would be a bug here
            log.error("REST fast path failed: %r", error)
            status, out = outcome(error)[:2]
        handler.answer(self.reply(status, out, rid, close), close)

    def reply(self, status: int, body: bytes, rid: str, close: bool) -> bytes:
        return (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%s%s: %s\r\n"
            b"Content-Length: %d\r\nDate: %s\r\nServer: %s\r\n%s\r\n%s"
            % (
                status,
                _REASONS.get(status, b"Unknown"),
                self.extra,
                _RID_HEADER,
                rid.encode(),
                len(body),
                _http_date(),
                _SERVER,
                b"Connection: close\r\n" if close else b"",
                body,
            )
        )


_DATE: list = [-1, b""]  # (second, its HTTP date)


def _http_date() -> bytes:
    """The Date header's value, formatted once a second (as aiohttp does)."""
    now = int(time.time())
    if now != _DATE[0]:
        _DATE[:] = [now, email.utils.formatdate(now, usegmt=True).encode()]
    return _DATE[1]


def fast_enabled() -> bool:
    """TFS_REST_FAST (env, default on): 0/false/off sends every REST call through aiohttp."""
    return os.environ.get("TFS_REST_FAST", "1").strip().lower() not in ("0", "false", "off")


_HEADS_MAX = 256  # header blocks _FastPredict remembers (all forgotten when full)...
_HEAD_KEPT_BYTES = 1024  # ...of at most this size
_HOLD_MAX = 1 << 16  # bytes a client may send ahead of a pending fast predict's answer
_REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}
_SERVER = SERVER_SOFTWARE.encode()
_RID_HEADER = REQUEST_ID_HEADER.encode()


class _Handler(RequestHandler):
    """aiohttp's protocol, with plain predicts and metrics scrapes answered as soon as they
    arrive (`_FastPredict`, `_FastScrape`)."""

    fast: _FastScrape | None = None
    predict: _FastPredict | None = None
    scrapes: ScrapeThread | None = None
    fresh = True  # no byte received yet on this connection
    raw = True  # every byte so far went to a fast path: aiohttp's parser has seen none
    pending: asyncio.Task | Answer | None = None  # a fast predict that went on (task or lane)
    held = b""  # what arrived while it was pending, taken once it has answered
    paused = False  # reading paused because `held` grew past _HOLD_MAX
    stopping = False

    def data_received(self, data: bytes) -> None:
        if self.pending is not None:  # a pipelined request: it waits for the answer before it
            self.held += data
            if len(self.held) > _HOLD_MAX and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            return
        fresh, self.fresh = self.fresh, False
        predict = self.predict
        if (
            predict is not None
            and self.raw
            and data.startswith(_FastPredict.PREFIX)
            and not (self._force_close or self._close or self.stopping)
            and self.transport is not None
        ):
            parsed = predict.parse(data)
            if parsed is not None:
                predict.serve(self, *parsed)
                return
        fast = self.fast
        if (
            fast is not None
            and data.startswith(fast.prefix)
            and not self._messages  # nothing queued or in progress on this connection: its
            # first bytes, or start() waits for the next request
            and (fresh or (self._waiter is not None and not self._waiter.done()))
            and self._payload_parser is None
            and not (self._force_close or self._close or self._upgraded)
            and self.transport is not None
        ):
            parsed_scrape = fast.parse(data)
            if parsed_scrape is not None:
                given, close = parsed_scrape
                if not close and self._hand_over(given):
                    return
                self.transport.write(fast.reply(given, close))
                if close:
                    self.force_close()
                elif self._keepalive_timeout > 0:
                    self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
                return
        self.raw = False
        super().data_received(data)

    def hold(self, task: asyncio.Task | Answer) -> None:
        """A fast predict goes on in `task`: keep what arrives meanwhile (`data_received`) and do
        not count the connection idle until it is answered. Reading pauses only when a client
        sends far ahead; pausing on every call cost two epoll changes a request."""
        self.pending = task
        self._next_keepalive_close_time = float("inf")

    def answer(self, data: bytes, close: bool) -> None:
        """Send a fast path's answer; the connection is idle again (or closes)."""
        was_held, self.pending = self.pending is not None, None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if close or self.stopping:
            self.force_close()
            return
        if self._keepalive_timeout > 0:
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        if was_held:
            if self.paused:
                self.paused = False
                transport.resume_reading()
            data, self.held = self.held, b""
            if data:
                self.data_received(data)

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        """aiohttp's graceful stop, after a fast predict in flight has been answered."""
        self.stopping = True
        task = self.pending
        if task is not None and not task.done():
            await asyncio.wait({task if isinstance(task, asyncio.Task) else task.wait()}, timeout=timeout)
        await super().shutdown(timeout)

    def _hand_over(self, given: str | None) -> bool:
        """Give this idle connection to the scrape thread, which answers this scrape and the
        ones after it; False (the loop answers) when the connection cannot move."""
        transport = self.transport
        if (
            self.scrapes is None
            or transport is None
            or transport.get_extra_info("ssl_object") is not None
            or transport.get_write_buffer_size()  # an earlier answer is still being sent
        ):
            return False
        own = transport.get_extra_info("socket")
        if own is None:
            return False
        sock = socket.socket(own.family, own.type, own.proto, fileno=os.dup(own.fileno()))
        if not self.scrapes.adopt(sock, given):
            sock.close()
            return False
        # The connection lives on in `sock`; closing asyncio's descriptor sends nothing.
        transport.pause_reading()
        transport.abort()
        return True


class _Server(web.Server):
    def __init__(
        self,
        handler: Any,
        fast: _FastScrape | None,
        scrapes: ScrapeThread | None,
        predict: _FastPredict | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._fast = fast
        self._scrapes = scrapes
        self._predict = predict

    def __call__(self) -> RequestHandler:
        proto = _Handler(self, loop=self._loop, **self._kwargs)
        proto.fast = self._fast
        proto.scrapes = self._scrapes
        proto.predict = self._predict
        return proto


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class _BadEncoding(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Inflater:
    """gzip / deflate inflated chunk by chunk, never more than `limit` bytes in all."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        self._d: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None

    @classmethod
    def for_header(cls, header: str, limit: int) -> _Inflater | None:
        codings = [c.strip().lower() for c in header.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if not codings:
            return None
        if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
            return cls("deflate" if codings[0] == "deflate" else "gzip", limit)
        raise _BadEncoding(
            415,
            f"Content-Encoding {header.strip()!r} is not supported: send the body as gzip, "
            "deflate or without encoding",
        )

    def _error(self, why: str) -> _BadEncoding:
        return _BadEncoding(400, f"Failed to decompress the {self.encoding} request body: {why}")

    def feed(self, chunk: bytes, out: bytearray) -> None:
        if self._d is None:  # deflate: zlib-wrapped as HTTP says, or raw as some clients send
            zlib_header = (
                len(chunk) >= 2 and chunk[0] & 0x0F == 8 and (chunk[0] * 256 + chunk[1]) % 31 == 0
            )
            self._d = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        data = chunk
        try:
            while data:
                if self._d.eof:  # gzip members may follow one another
                    if self.encoding != "gzip":
                        raise self._error("data after the end of the stream")
                    self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += self._d.decompress(data, self.limit - len(out) + 1)
                if len(out) > self.limit:
                    raise _TooLarge(
                        f"Decompressed request body exceeds the limit of {self.limit} bytes"
                    )
                data = self._d.unconsumed_tail or self._d.unused_data
        except zlib.error as e:
            raise self._error(str(e)) from None

    def finish(self) -> None:
        if self._d is None or not self._d.eof:
            raise self._error("the stream ends before its end marker")
