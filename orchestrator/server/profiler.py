"""`tensorflow.ProfilerService` on the gRPC port (--enable_profiler, default true, as TF Serving).

`tf.profiler.experimental.client.trace("grpc://HOST:PORT", logdir, duration_ms)` asks Profile to
trace this process for duration_ms. We run TensorFlow's own profiler session here (the
`_pywrap_profiler.ProfilerSession` behind `tf.profiler.experimental.start`), so session runs on
every thread are traced, and write the XSpace where TensorFlow's profiler service writes it:
REPOSITORY_ROOT/SESSION_ID/HOST_NAME.xplane.pb (the client sets REPOSITORY_ROOT to
LOGDIR/plugins/profile, which TensorBoard reads). As upstream, the path is on the server's file
system, named by the client; SESSION_ID and HOST_NAME may not climb out of it.

Terminate ends a running trace early; Monitor answers UNIMPLEMENTED, as TensorFlow's does. The
messages are read and written by field number (tsl/profiler/protobuf/profiler_service.proto),
since TensorFlow's wheel ships no Python module for them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import grpc

from orchestrator.protocol.wire import _fields

log = logging.getLogger("tfs.profiler")
SERVICE = "tensorflow.ProfilerService"
# ProfileOptions' defaults before it had a version (profiler_options.proto)
_DEFAULT_LEVELS = {"host_tracer_level": 2, "device_tracer_level": 1, "python_tracer_level": 0}


def _identity(b: bytes) -> bytes:
    return b


def parse_profile_request(raw: bytes) -> dict[str, Any]:
    """The ProfileRequest fields we use: duration_ms (1), opts (4, ProfileOptions),
    repository_root (5), session_id (6), host_name (7)."""
    out: dict[str, Any] = {
        "duration_ms": 0,
        "opts": b"",
        "repository_root": "",
        "session_id": "",
        "host_name": "",
    }
    names = {4: "opts", 5: "repository_root", 6: "session_id", 7: "host_name"}
    for number, wire, a, b in _fields(raw, 0, len(raw)):
        if number == 1 and wire == 0:
            out["duration_ms"] = a
        elif number in names and wire == 2:
            value = bytes(raw[a:b])
            out[names[number]] = value if number == 4 else value.decode("utf-8", "replace")
    return out


class ProfilerApi:
    """Generic handlers for tensorflow.ProfilerService; one trace at a time per process."""

    def __init__(self) -> None:
        self._busy = False
        self._stop: dict[str, asyncio.Event] = {}

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        methods = {
            "Profile": self.profile,
            "Terminate": self.terminate,
            "Monitor": self.monitor,
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=_identity, response_serializer=_identity
            )
            for name, fn in methods.items()
        }
        return [grpc.method_handlers_generic_handler(SERVICE, handlers)]

    async def profile(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            req = parse_profile_request(raw)
        except (ValueError, IndexError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed ProfileRequest")
        session_id, host = req["session_id"], req["host_name"] or socket.gethostname()
        for what, value in (("session_id", session_id), ("host_name", host)):
            if "/" in value or value in (".", ".."):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{what} {value!r} is not a file name"
                )
        if not req["repository_root"]:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "repository_root is empty")
        options, duration_ms = _options(req["opts"], req["duration_ms"])
        if self._busy:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "Another profiling session is active; try later"
            )
        self._busy = True
        stop = self._stop.setdefault(session_id, asyncio.Event())
        try:
            from tensorflow.python.profiler.internal import _pywrap_profiler

            session = _pywrap_profiler.ProfilerSession()
            try:
                session.start("", options)
            except Exception as e:  # TF raises its own error types here
                await context.abort(grpc.StatusCode.INTERNAL, str(e))
            started = time.monotonic()
            try:
                await asyncio.wait_for(stop.wait(), timeout=duration_ms / 1000)
            except asyncio.TimeoutError:
                pass
            finally:
                xspace = session.stop()
            log.info(
                "Profiled %.0f ms for session %s: %d bytes",
                (time.monotonic() - started) * 1000,
                session_id,
                len(xspace),
            )
            folder = os.path.join(req["repository_root"], session_id)
            path = os.path.join(folder, f"{host}.xplane.pb")
            try:
                await asyncio.get_running_loop().run_in_executor(None, _write, folder, path, xspace)
            except OSError as e:
                await context.abort(grpc.StatusCode.INTERNAL, f"{path}: {e.strerror}")
        finally:
            self._busy = False
            self._stop.pop(session_id, None)
        # ProfileResponse.empty_trace (7) when nothing was collected.
        return b"" if xspace else b"\x38\x01"

    async def terminate(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        session_id = ""
        for number, wire, a, b in _fields(raw, 0, len(raw)):
            if number == 1 and wire == 2:
                session_id = bytes(raw[a:b]).decode("utf-8", "replace")
        event = self._stop.get(session_id)
        if event is not None:
            event.set()
        return b""

    async def monitor(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unimplemented.")
        return b""  # pragma: no cover


def _options(opts: bytes, duration_ms: int) -> tuple[dict[str, int], int]:
    """ProfilerSession options from a serialized ProfileOptions, and the trace duration."""
    levels = dict(_DEFAULT_LEVELS)
    if opts:
        from tensorflow.tsl.profiler.protobuf import profiler_options_pb2

        msg = profiler_options_pb2.ProfileOptions.FromString(opts)
        if msg.version:
            levels = {
                "host_tracer_level": msg.host_tracer_level,
                "device_tracer_level": msg.device_tracer_level,
                "python_tracer_level": msg.python_tracer_level,
            }
        duration_ms = duration_ms or msg.duration_ms
    return levels, max(int(duration_ms), 1)


def _write(folder: str, path: str, data: bytes) -> None:
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


__all__ = ["SERVICE", "ProfilerApi", "parse_profile_request"]
