"""Log lines as text or JSON (`--log-format json`), one line per event, for server and CLI.

JSON lines carry time, level, logger and message, plus model, version and request_id when the
event belongs to a request (the server's `RequestContext` filter adds them). Imports nothing of
ours, so every layer may use it.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_METADATA = "x-request-id"
_bits = random.getrandbits


def request_id(given: str | None) -> str:
    """The caller's id when it is 1-128 printable ASCII characters, else a new random one: 64
    bits from `random`, which reseeds in a forked worker, not `os.urandom`, a system call per
    request (an id needs to be unique, not secret)."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return f"{_bits(64):016x}"


class JsonFormatter(logging.Formatter):
    FIELDS = ("model", "version", "request_id")

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in self.FIELDS:
            value = getattr(record, key, None)
            if value not in (None, ""):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class RequestContext(logging.Filter):
    """Adds model, version and request_id of the request being handled (from `current()`)."""

    def __init__(self, current: Callable[[], Any]) -> None:
        super().__init__()
        self._current = current

    def filter(self, record: logging.LogRecord) -> bool:
        call = self._current()
        if call is not None:
            record.model = getattr(call, "model", "")
            record.version = getattr(call, "version", "")
            record.request_id = getattr(call, "request_id", "")
        return True


def configure(fmt: str, level: int | str, *, stream: Any = None,
              context: logging.Filter | None = None) -> logging.Handler:
    """One stderr handler on the root logger in the chosen format (replacing earlier ones)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    if context is not None:
        handler.addFilter(context)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
