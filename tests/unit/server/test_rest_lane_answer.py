"""A fast-lane call that fails unexpectedly is logged with its own model, version and request id.

The lane answers from outside the call's context (a batch answers every call from whichever one
closed it), so the log line must not take the context it happens to run in. The server, model and
socket are stand-ins here: an unexpected error (not a ServingStatus) cannot be caused through a
real model on purpose; the live lane is tested in tests/integration/server/test_rest_lane.py.
"""

from __future__ import annotations

import io
import json
import logging
import time
from types import SimpleNamespace
from typing import Any

from orchestrator.logs import JsonFormatter, RequestContext
from orchestrator.server import rest_lane
from orchestrator.server.metrics import CURRENT_CALL, Call, Metrics


class Handler:
    def __init__(self) -> None:
        self.answers: list[tuple[bytes, bool]] = []

    def answer(self, data: bytes, close: bool) -> None:
        self.answers.append((data, close))


def test_an_unexpected_error_is_logged_with_the_failing_calls_request_id() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContext(CURRENT_CALL.get))
    logger = rest_lane.log
    logger.addHandler(handler)
    core = SimpleNamespace(metrics=Metrics())

    def reply(status: int, body: bytes, rid: str, close: bool) -> bytes:
        return f"{status} {rid} ".encode() + body

    lane = rest_lane.Lane(core, None, reply)  # type: ignore[arg-type]
    sock = Handler()
    servable = SimpleNamespace(name="m", version=3)
    plan = SimpleNamespace(signature_name="serving_default", output_aliases=["y"])
    answer = rest_lane.Answer(lane, sock, servable, plan, Call("m", "predict", "rest", "ours-1"),
                              False, time.perf_counter())  # fmt: skip
    other = Call("other", "predict", "rest", "theirs-2")  # the call whose batch answers ours
    token = CURRENT_CALL.set(other)
    try:
        answer.set_exception(RuntimeError("boom"))
        assert CURRENT_CALL.get() is other
    finally:
        CURRENT_CALL.reset(token)
        logger.removeHandler(handler)
    lines: list[dict[str, Any]] = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(lines) == 1
    assert lines[0]["request_id"] == "ours-1"
    assert lines[0]["model"] == "m" and lines[0]["version"] == "3"
    assert "boom" in lines[0]["message"]
    ((data, close),) = sock.answers
    assert data.startswith(b"500 ours-1 ") and not close
