"""REST predicts answered without a task, future or timer per call: the REST fast path's lane.

A plain row-format predict (`{"instances": [...]}` of numbers, with or without a
`signature_name`, for a signature with one floating-point input) that the REST fast path has
parsed is served here in one of two ways:
- with batching on, it joins its batch queue with an `Answer` as the queue's sink: when the batch
  has run, the queue hands each call its rows and the answer is written to the connection right
  there;
- without (or when this call cannot batch), a run small enough for the event loop (the runner's
  `inline` rule) runs at once and is answered before `take` returns.
The general path drives a coroutine for every call, in a task under its own timeout and resumed
through a future when it waits for a batch, which was most of a small model's batched REST CPU
(#17). Deadlines are kept by one timer for all waiting calls (`Lane._expire`): the calls of a
server share one timeout, so the oldest call's deadline is always the next one due.

Anything else (other verbs, the columnar `inputs` format, objects, strings, debug logging, a run
for the thread pool, a request the checks here refuse) goes the general way, which also writes
those error answers: `take` returns False before it has changed anything. Answers, metrics,
deadlines and payload-log records are those of `RestApi.infer`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from orchestrator.server import json_tensor as jt
from orchestrator.server.batching import BatchingRunner, DirectRunner
from orchestrator.server.core import Core
from orchestrator.server.metrics import CURRENT_CALL, Call
from orchestrator.server.status import ServingStatus

log = logging.getLogger("tfs.rest")


def outcome(error: BaseException) -> tuple[int, bytes, str]:
    """(HTTP status, body, status code) of a REST call that failed: TF Serving's error JSON, and
    for anything but a ServingStatus (a bug) an internal error naming the exception."""
    if isinstance(error, ServingStatus):
        return error.http_status, jt.error_body(error.message), error.code
    return 500, jt.error_body(f"{type(error).__name__}: {error}"), "INTERNAL"


class Lane:
    """The batched fast lane of one REST server (module docstring). `reply(status, body, rid,
    close)` builds the HTTP answer; the handler given to `take` has `hold(pending)` and
    `answer(data, close)` (rest._Handler)."""

    def __init__(
        self,
        core: Core,
        timeout_s: float | None,
        reply: Callable[[int, bytes, str, bool], bytes],
    ) -> None:
        self.core = core
        self.timeout_s = timeout_s
        self.reply = reply
        self.pending: dict[Answer, float] = {}  # calls in flight -> deadline, oldest first
        self.timer: asyncio.TimerHandle | None = None
        self.calls = 0  # calls this lane took (a test reads it)

    def take(self, handler: Any, m: re.Match[str], body: bytes, rid: str, close: bool) -> bool:
        """True when the call is answered or queued here; False (nothing changed) for the
        general path."""
        start = time.perf_counter()
        core = self.core
        runner = core.runner
        batching = type(runner) is BatchingRunner
        direct = runner.direct if batching else runner
        if (
            m.group(4).lower() != "predict"
            or type(direct) is not DirectRunner
            or log.isEnabledFor(logging.DEBUG)
        ):
            return False
        model = m.group(1)
        text = m.group(2)
        try:
            servable = core.manager.resolve(model, None if text is None else int(text), m.group(3))
            doc = orjson.loads(body)
        except (ServingStatus, ValueError):  # orjson's JSONDecodeError is a ValueError
            return False
        if type(doc) is not dict:
            return False
        instances = doc.get("instances")
        if type(instances) is not list or not instances or type(instances[0]) is dict:
            return False
        signature = doc.get("signature_name", "")
        if type(signature) is not str or len(doc) != (2 if "signature_name" in doc else 1):
            return False
        try:
            inputs = core.predict_inputs(servable, signature)
            if len(inputs) != 1:
                return False
            ((alias, dtype),) = inputs.items()
            array = jt.row_instances(instances, dtype)
            if array is None:
                return False
            plan, arrays = core.predict_plan(servable, signature, {alias: array})
            answer = Answer(self, handler, servable, plan, Call(model, "predict", "rest", rid),
                             close, start)  # fmt: skip
            logger = core.payload.by_model.get(model)
            if logger is not None:  # the payload log keeps what the general path would hand it
                answer.logged = (logger, {alias: array})
            queued = batching and runner.join(servable, plan.key, arrays, answer)
        except ServingStatus:
            return False
        # Not queued (no batching, or not for this call): only a run small enough for the loop.
        if not queued and not direct.inline(servable, plan.key):
            return False
        self.calls += 1
        answer.queued = time.perf_counter()
        if not queued:
            try:
                outs = direct.run_inline(servable, plan.key, arrays)
            except Exception as error:
                answer.set_exception(error)
            else:
                answer.set_result(outs)
            return True
        if self.timeout_s is not None:
            loop = asyncio.get_running_loop()
            self.pending[answer] = loop.time() + self.timeout_s
            if self.timer is None:
                self.timer = loop.call_at(self.pending[answer], self._expire)
        handler.hold(answer)
        return True

    def _expire(self) -> None:
        """Answer every call past its deadline (504), then wait for the next one due."""
        self.timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self.pending:
            answer, deadline = next(iter(self.pending.items()))
            if deadline > now:
                self.timer = loop.call_at(deadline, self._expire)
                return
            answer.finish(504, jt.error_body("Deadline Exceeded"), "DEADLINE_EXCEEDED")


class Answer:
    """One call's sink in the batch queue (what a future is to the general path)."""

    __slots__ = (
        "answered",
        "call",
        "close",
        "handler",
        "lane",
        "logged",
        "plan",
        "queued",
        "servable",
        "start",
        "waiter",
    )  # fmt: skip

    def __init__(self, lane: Lane, handler: Any, servable: Any, plan: Any, call: Call,
                 close: bool, start: float) -> None:  # fmt: skip
        self.lane, self.handler, self.servable, self.plan = lane, handler, servable, plan
        self.call, self.close, self.start = call, close, start
        call.version = str(servable.version)
        call.signature = plan.signature_name
        self.queued = start
        self.waiter: asyncio.Future | None = None
        self.answered = False
        self.logged: tuple[Any, dict[str, Any]] | None = None  # (payload logger, inputs)

    def done(self) -> bool:
        return self.answered

    def set_result(self, outs: list[Any]) -> None:
        """The call's rows of the batch's outputs (from the queue, on the event loop)."""
        if self.answered:
            return
        metrics = self.lane.core.metrics
        metrics.record_runtime(self.servable.name, "Predict", (time.perf_counter() - self.queued) * 1e6)
        try:
            outputs = dict(zip(self.plan.output_aliases, outs, strict=False))
            if self.logged is not None:  # sampled as Core.predict does on the general path
                logger, inputs = self.logged
                self._as_call(logger.maybe, self.servable.version, self.plan.signature_name,
                              inputs, outputs)  # fmt: skip
            body = jt.predict_response(outputs, True)
        except Exception as error:
            self.set_exception(error)
            return
        self.finish(200, body, "OK")

    def set_exception(self, error: BaseException) -> None:
        if self.answered:
            return
        if not isinstance(error, ServingStatus):
            self._as_call(log.error, "REST POST predict of %s failed: %r", self.call.model, error)
        self.finish(*outcome(error))

    def _as_call(self, fn: Callable[..., None], *args: Any) -> None:
        """fn(*args) in this call's context, so a payload record or log line gets this call's
        model, version and request id: the lane runs outside the call's own context (a batch
        answers from whichever call closed it)."""
        token = CURRENT_CALL.set(self.call)
        try:
            fn(*args)
        finally:
            CURRENT_CALL.reset(token)

    def finish(self, status: int, body: bytes, code: str) -> None:
        self.answered = True
        lane = self.lane
        lane.pending.pop(self, None)
        call = self.call
        metrics = lane.core.metrics
        latency = (time.perf_counter() - self.start) * 1e6 if code == "OK" else 0
        metrics.record_request(call.model, "predict", "REST", code, latency)
        metrics.end(call, code, self.start)
        try:
            self.handler.answer(lane.reply(status, body, call.request_id, self.close), self.close)
        except Exception as error:
            self._as_call(log.error, "REST fast lane could not answer: %r", error)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def wait(self) -> asyncio.Future:
        """A future done once the call is answered (a graceful stop waits on it)."""
        if self.waiter is None:
            self.waiter = asyncio.get_running_loop().create_future()
            if self.answered:
                self.waiter.set_result(None)
        return self.waiter
