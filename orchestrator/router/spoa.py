"""An SPOP agent (HAProxy's Stream Processing Offload Protocol, SPOP 2.0) in asyncio.

HAProxy's SPOE filter hands a stream's samples to an agent in NOTIFY frames and waits for each
frame's ACK (bounded by the engine's `timeout processing`). This agent acknowledges every NOTIFY
as soon as its header is read, before it looks at the payload, and gives the messages to a
callback that must not block (the capture agent puts them on a bounded queue): the request it
came from waits one loopback round trip, never on what the agent does with the data.

Framing, as doc/SPOE.txt (section 3) specifies it: each frame is a 4-byte big-endian length,
then type (1 byte), flags (4 bytes, big-endian; bit 0 FIN, bit 1 ABORT), stream id and frame
id (varints), then the payload: a KV-list (HELLO, DISCONNECT) or a list of messages (NOTIFY).
Varints use HAProxy's "peers" encoding. The agent announces `pipelining` (many NOTIFY frames in
flight on one connection, acknowledged in any order) and `fragmentation` (a payload split over
frames with FIN clear, continued by frames of type UNSET).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("tfso.spoa")

# Frame types
UNSET, HAPROXY_HELLO, HAPROXY_DISCONNECT, NOTIFY = 0, 1, 2, 3
AGENT_HELLO, AGENT_DISCONNECT, ACK = 101, 102, 103
# Frame flags
FIN, ABORT = 0x1, 0x2
# Typed data
T_NULL, T_BOOL, T_INT32, T_UINT32, T_INT64, T_UINT64 = 0, 1, 2, 3, 4, 5
T_IPV4, T_IPV6, T_STRING, T_BINARY = 6, 7, 8, 9
# Status codes (SPOE.txt 3.5)
ST_NORMAL, ST_INVALID, ST_BAD_VERSION, ST_BAD_FRAME_SIZE, ST_UNKNOWN = 0, 4, 8, 9, 99

VERSION = "2.0"
CAPABILITIES = "pipelining,fragmentation"
MAX_FRAME_SIZE = 16 * 1024 * 1024  # what we accept; the smaller of it and HAProxy's is used
MAX_PAYLOAD = 64 * 1024 * 1024  # a fragmented payload larger than this is dropped


class ProtocolError(Exception):
    def __init__(self, message: str, status: int = ST_INVALID) -> None:
        super().__init__(message)
        self.status = status


# -- encoding --------------------------------------------------------------------------------------
def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    if value < 240:
        return bytes((value,))
    out = bytearray(((value | 240) & 0xFF,))
    value = (value - 240) >> 4
    while value >= 128:
        out.append((value | 128) & 0xFF)
        value = (value - 128) >> 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """(value, next position)."""
    try:
        value = buf[pos]
        pos += 1
        if value >= 240:
            shift = 4
            while True:
                b = buf[pos]
                pos += 1
                value += b << shift
                shift += 7
                if b < 128:
                    break
    except IndexError:
        raise ProtocolError("truncated varint") from None
    return value, pos


def encode_string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return encode_varint(len(data)) + data


def encode_typed(value: Any) -> bytes:
    """None, bool, int (as INT64 or UINT64), str, bytes as SPOP typed data."""
    if value is None:
        return bytes((T_NULL,))
    if isinstance(value, bool):
        return bytes((T_BOOL | (0x10 if value else 0),))
    if isinstance(value, int):
        if value < 0:
            return bytes((T_INT64,)) + encode_varint(value + (1 << 64))
        return bytes((T_UINT64,)) + encode_varint(value)
    if isinstance(value, str):
        return bytes((T_STRING,)) + encode_string(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes((T_BINARY,)) + encode_string(bytes(value))
    raise TypeError(f"no SPOP type for {type(value).__name__}")


def encode_kv(items: Iterable[tuple[str, Any]]) -> bytes:
    return b"".join(encode_string(k) + encode_typed(v) for k, v in items)


def encode_uint32(value: int) -> bytes:
    return bytes((T_UINT32,)) + encode_varint(value)


def disconnect(status: int, message: str) -> bytes:
    """An AGENT-DISCONNECT frame (status-code is a UINT32)."""
    return frame(AGENT_DISCONNECT, encode_string("status-code") + encode_uint32(status)
                 + encode_kv([("message", message)]))


def frame(ftype: int, payload: bytes = b"", *, flags: int = FIN, stream_id: int = 0,
          frame_id: int = 0) -> bytes:
    """One frame with its 4-byte length in front."""
    body = (bytes((ftype,)) + struct.pack(">I", flags) + encode_varint(stream_id)
            + encode_varint(frame_id) + payload)
    return struct.pack(">I", len(body)) + body


def encode_messages(messages: Iterable[tuple[str, Iterable[tuple[str, Any]]]]) -> bytes:
    """LIST-OF-MESSAGES (what HAProxy sends in NOTIFY; used by tests and tools)."""
    out = bytearray()
    for name, args in messages:
        items = list(args)
        out += encode_string(name) + bytes((len(items),)) + encode_kv(items)
    return bytes(out)


# -- decoding --------------------------------------------------------------------------------------
def decode_typed(buf: bytes | memoryview, pos: int) -> tuple[Any, int]:
    try:
        head = buf[pos]
    except IndexError:
        raise ProtocolError("truncated typed data") from None
    pos += 1
    kind, flags = head & 0x0F, head >> 4
    if kind == T_NULL:
        return None, pos
    if kind == T_BOOL:
        return bool(flags & 1), pos
    if kind in (T_INT32, T_UINT32, T_INT64, T_UINT64):
        value, pos = decode_varint(buf, pos)
        if kind in (T_INT32, T_INT64) and value >= 1 << 63:
            value -= 1 << 64
        return value, pos
    if kind == T_IPV4:
        return ipaddress.IPv4Address(bytes(buf[pos:pos + 4])), pos + 4
    if kind == T_IPV6:
        return ipaddress.IPv6Address(bytes(buf[pos:pos + 16])), pos + 16
    if kind in (T_STRING, T_BINARY):
        length, pos = decode_varint(buf, pos)
        if pos + length > len(buf):
            raise ProtocolError("truncated string")
        data = bytes(buf[pos:pos + length])
        return (data.decode("utf-8", "replace") if kind == T_STRING else data), pos + length
    raise ProtocolError(f"unknown data type {kind}")


def decode_string(buf: bytes | memoryview, pos: int) -> tuple[str, int]:
    length, pos = decode_varint(buf, pos)
    if pos + length > len(buf):
        raise ProtocolError("truncated name")
    return bytes(buf[pos:pos + length]).decode("utf-8", "replace"), pos + length


def decode_kv(buf: bytes | memoryview, pos: int = 0, count: int | None = None) -> tuple[dict[str, Any], int]:
    """A KV-list to its end (or `count` entries); unnamed entries get their index as name."""
    out: dict[str, Any] = {}
    n = 0
    while pos < len(buf) and (count is None or n < count):
        name, pos = decode_string(buf, pos)
        value, pos = decode_typed(buf, pos)
        out[name or str(n)] = value
        n += 1
    if count is not None and n < count:
        raise ProtocolError("truncated argument list")
    return out, pos


def decode_messages(buf: bytes | bytearray | memoryview) -> list[tuple[str, dict[str, Any]]]:
    """LIST-OF-MESSAGES -> [(name, {arg: value})]; unnamed arguments get their index as name.

    One pass over a bytes copy with the common cases inline (one-byte varints, strings, binary,
    null): a NOTIFY's payload arrives per sampled request on the event loop, and going through
    decode_string / decode_typed per argument cost about 35 µs a message of eleven arguments."""
    data = bytes(buf)
    size = len(data)
    out = []
    pos = 0
    try:
        while pos < size:
            n = data[pos]
            if n < 240:
                pos += 1
            else:
                n, pos = decode_varint(data, pos)
            end = pos + n
            if end > size:
                raise ProtocolError("truncated name")
            name = data[pos:end].decode("utf-8", "replace")
            nargs = data[end]
            pos = end + 1
            args: dict[str, Any] = {}
            for i in range(nargs):
                if pos >= size:
                    raise ProtocolError("truncated argument list")
                n = data[pos]
                if n < 240:
                    pos += 1
                else:
                    n, pos = decode_varint(data, pos)
                end = pos + n
                if end > size:
                    raise ProtocolError("truncated name")
                key = data[pos:end].decode("utf-8", "replace") if n else str(i)
                kind = data[end] & 0x0F
                pos = end + 1
                if kind in (T_BINARY, T_STRING):
                    n = data[pos]
                    if n < 240:
                        pos += 1
                    else:
                        n, pos = decode_varint(data, pos)
                    end = pos + n
                    if end > size:
                        raise ProtocolError("truncated string")
                    value: Any = data[pos:end]
                    if kind == T_STRING:
                        value = value.decode("utf-8", "replace")
                    pos = end
                elif kind == T_NULL:
                    value = None
                else:
                    value, pos = decode_typed(data, end)
                args[key] = value
            out.append((name, args))
    except IndexError:
        raise ProtocolError("truncated message") from None
    return out


def parse_frame(body: bytes | bytearray) -> tuple[int, int, int, int, memoryview]:
    """A frame without its length: (type, flags, stream id, frame id, payload)."""
    if len(body) < 7:
        raise ProtocolError("frame too short")
    (flags,) = struct.unpack_from(">I", body, 1)
    stream_id, pos = decode_varint(body, 5)
    frame_id, pos = decode_varint(body, pos)
    return body[0], flags, stream_id, frame_id, memoryview(body)[pos:]


# -- the agent -------------------------------------------------------------------------------------
OnMessages = Callable[[list[tuple[str, dict[str, Any]]]], None]


class Agent:
    """Serves SPOP on a TCP port; every NOTIFY is acknowledged at once, then handed to
    `on_messages` (which must return quickly; it runs on the event loop).

    A connection is an asyncio Protocol, not a stream reader: HAProxy pipelines NOTIFY frames,
    so one read often holds several; each read's frames are parsed in one pass and their ACKs
    leave in one write (a stream reader took two awaits and a send per frame)."""

    def __init__(self, on_messages: OnMessages, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.on_messages = on_messages
        self.host = host
        self.port = port
        self.server: asyncio.base_events.Server | None = None
        self.connections = 0
        self.frames = 0
        self.errors = 0

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Session(self), self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()


class _Session(asyncio.Protocol):
    """One HAProxy connection: HELLO, then NOTIFY frames until DISCONNECT or close."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.transport: Any = None
        self.buf = bytearray()
        self.hello_done = False
        self.max_size = MAX_FRAME_SIZE
        self.partial: dict[tuple[int, int], bytearray] = {}
        self.last: tuple[int, int] | None = None  # the fragmented frame being received
        self.closing = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.agent.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.agent.connections -= 1
        self.closing = True

    # Writes are small ACKs; when HAProxy stops reading them, stop reading its frames too.
    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.closing:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        buf = self.buf
        buf += data
        out: list[bytes] = []
        batches: list[list[tuple[str, dict[str, Any]]]] = []
        pos, size = 0, len(buf)
        try:
            while size - pos >= 4:
                length = int.from_bytes(buf[pos:pos + 4], "big")
                if length > self.max_size:
                    raise ProtocolError(f"frame of {length} bytes is over max-frame-size "
                                        f"{self.max_size}", ST_BAD_FRAME_SIZE)
                if size - pos - 4 < length:
                    break
                body = buf[pos + 4:pos + 4 + length]  # one copy: the buffer moves on below
                pos += 4 + length
                if not self._frame(body, out, batches):
                    break
        except ProtocolError as exc:
            self.agent.errors += 1
            log.warning("SPOP error from %s: %s", self.transport.get_extra_info("peername"), exc)
            out.append(disconnect(exc.status, str(exc)))
            self.closing = True
        del buf[:pos]
        if out:
            self.transport.write(b"".join(out))
        for messages in batches:
            self.agent.on_messages(messages)
        if self.closing:
            self.transport.close()

    def _frame(self, body: bytearray, out: list[bytes],
               batches: list[list[tuple[str, dict[str, Any]]]]) -> bool:
        """Handle one frame; False when the connection is to close after what `out` holds."""
        ftype, flags, sid, fid, payload = parse_frame(body)
        if not self.hello_done:
            out.append(self._hello(ftype, payload))
            self.hello_done = True
            return not self.closing
        if ftype == HAPROXY_DISCONNECT:
            out.append(disconnect(ST_NORMAL, "bye"))
            self.closing = True
            return False
        if ftype == UNSET and self.last is not None:  # a continuation fragment
            sid, fid = self.last
        elif ftype != NOTIFY:
            return True  # unknown frames may be skipped (SPOE.txt 3.2.2)
        key = (sid, fid)
        if flags & ABORT:
            self.partial.pop(key, None)
            self.last = None
            return True
        if not flags & FIN:
            buf = self.partial.setdefault(key, bytearray())
            buf += payload
            self.last = key
            if len(buf) > MAX_PAYLOAD:
                raise ProtocolError("fragmented payload too large", ST_BAD_FRAME_SIZE)
            return True
        whole: bytes | memoryview = payload
        if key in self.partial:
            whole = bytes(self.partial.pop(key) + payload)
        self.last = None
        # Acknowledge first (no actions): HAProxy resumes the stream as soon as it reads it.
        out.append(frame(ACK, stream_id=sid, frame_id=fid))
        self.agent.frames += 1
        try:
            batches.append(decode_messages(whole))
        except ProtocolError as exc:
            self.agent.errors += 1
            log.warning("undecodable NOTIFY payload: %s", exc)
        return True

    def _hello(self, ftype: int, payload: memoryview) -> bytes:
        if ftype != HAPROXY_HELLO:
            raise ProtocolError(f"expected HAPROXY-HELLO, got frame type {ftype}")
        hello, _ = decode_kv(payload)
        versions = [v.strip() for v in str(hello.get("supported-versions", "")).split(",")]
        if not any(v.split(".")[0] == "2" for v in versions):
            raise ProtocolError(f"no supported SPOP version in {versions}", ST_BAD_VERSION)
        max_size = min(int(hello.get("max-frame-size") or 0), MAX_FRAME_SIZE)
        if max_size < 256:
            raise ProtocolError(f"max-frame-size {max_size} is under 256", ST_BAD_FRAME_SIZE)
        self.max_size = max_size
        if hello.get("healthcheck"):
            self.closing = True
        return frame(AGENT_HELLO, encode_kv([("version", VERSION)]) + encode_string("max-frame-size")
                     + encode_uint32(max_size) + encode_kv([("capabilities", CAPABILITIES)]))
