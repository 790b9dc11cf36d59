"""The SPOP agent's framing (HAProxy's doc/SPOE.txt, section 3) and a session over loopback.

The session tests speak HAProxy's side of the protocol from the frames the spec describes:
HAPROXY-HELLO, NOTIFY (whole and fragmented), HAPROXY-DISCONNECT, and a health check.
The real HAProxy talks to the same agent in tests/integration/router/test_capture.py.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.router import spoa
from orchestrator.router.capture import parse_drops


@pytest.mark.parametrize(("value", "size"), [
    (0, 1), (239, 1), (240, 2), (2287, 2), (2288, 3), (264431, 3), (264432, 4),
    (33818863, 4), (33818864, 5), (2**32 - 1, 5), (2**63, 10)])
def test_varint_sizes_follow_the_spec_table_and_round_trip(value: int, size: int) -> None:
    data = spoa.encode_varint(value)
    assert len(data) == size
    assert spoa.decode_varint(data + b"tail", 0) == (value, size)


def test_varint_known_bytes() -> None:
    assert spoa.encode_varint(240) == b"\xf0\x00"
    assert spoa.encode_varint(2288) == b"\xf0\x80\x00"
    with pytest.raises(spoa.ProtocolError):
        spoa.decode_varint(b"\xf0\x80", 0)


def test_typed_data_round_trip() -> None:
    for value in (None, True, False, 0, 7, 2**40, -5, "héllo", b"\x00\xff" * 300):
        encoded = spoa.encode_typed(value)
        assert spoa.decode_typed(encoded, 0) == (value, len(encoded))
    # INT32 -1 as HAProxy writes it: the varint of the value cast to 64 bits.
    assert spoa.decode_typed(bytes((spoa.T_INT32,)) + spoa.encode_varint(2**64 - 1), 0)[0] == -1
    ipv4 = bytes((spoa.T_IPV4,)) + bytes((127, 0, 0, 1))
    assert str(spoa.decode_typed(ipv4, 0)[0]) == "127.0.0.1"
    with pytest.raises(spoa.ProtocolError):
        spoa.decode_typed(bytes((spoa.T_STRING,)) + spoa.encode_varint(10) + b"short", 0)


def test_messages_round_trip_with_unnamed_arguments() -> None:
    payload = spoa.encode_messages([("m1", [("path", "/v1/models/a:predict"), ("", 3)]),
                                    ("m2", [])])
    assert spoa.decode_messages(payload) == [("m1", {"path": "/v1/models/a:predict", "1": 3}),
                                             ("m2", {})]


_TYPED = st.one_of(st.none(), st.booleans(), st.integers(0, 2**64 - 1), st.integers(-(2**63), -1),
                   st.text(max_size=300), st.binary(max_size=3000))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20),
                          st.lists(st.tuples(st.text(max_size=12), _TYPED), max_size=12)), max_size=3))
def test_messages_decode_to_what_was_encoded_and_truncation_is_a_protocol_error(
        messages: list[tuple[str, list[tuple[str, Any]]]]) -> None:
    payload = spoa.encode_messages(messages)
    want = []
    for name, args in messages:
        decoded: dict[str, Any] = {}
        for i, (key, value) in enumerate(args):
            decoded[key or str(i)] = value
        want.append((name, decoded))
    assert spoa.decode_messages(payload) == want
    assert spoa.decode_messages(memoryview(payload)) == want
    for cut in {1, len(payload) // 2, len(payload) - 1} - {0, len(payload)}:
        if 0 < cut < len(payload):
            try:
                spoa.decode_messages(payload[:cut])
            except spoa.ProtocolError:
                pass  # a prefix may also end on a message boundary and decode


def test_frame_layout() -> None:
    data = spoa.frame(spoa.ACK, b"", stream_id=300, frame_id=2)
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    assert spoa.parse_frame(data[4:])[:4] == (spoa.ACK, spoa.FIN, 300, 2)


def test_parse_drops_reads_show_table() -> None:
    dump = ("# table: tfso_capture_drops, type: string, size:256, used:2\n"
            "0x55d0c0a1b2c0: key=hpt use=0 exp=0 shard=0 gpc0=12\n"
            "0x55d0c0a1b3c0: key=grpc use=0 exp=0 shard=0 gpc0=3\n\n")
    assert parse_drops(dump) == {"hpt": 12, "grpc": 3}


# -- a session ---------------------------------------------------------------------------------------
def _hello(*, healthcheck: bool = False, max_frame: int = 16380) -> bytes:
    kv = spoa.encode_kv([("supported-versions", "2.0")]) + spoa.encode_string("max-frame-size") \
        + spoa.encode_uint32(max_frame) + spoa.encode_kv([("capabilities", "pipelining,async")])
    if healthcheck:
        kv += spoa.encode_kv([("healthcheck", True)])
    return spoa.frame(spoa.HAPROXY_HELLO, kv)


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, int, int, int, dict[str, Any] | bytes]:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    ftype, flags, sid, fid, payload = spoa.parse_frame(await reader.readexactly(length))
    if ftype in (spoa.AGENT_HELLO, spoa.AGENT_DISCONNECT):
        return ftype, flags, sid, fid, spoa.decode_kv(payload)[0]
    return ftype, flags, sid, fid, bytes(payload)


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_session_acks_every_notify_and_hands_over_the_messages() -> None:
    got: list[list[tuple[str, dict[str, Any]]]] = []

    async def main() -> None:
        agent = spoa.Agent(got.append)
        port = await agent.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_hello())
        ftype, _, _, _, hello = await _read_frame(reader)
        assert ftype == spoa.AGENT_HELLO
        assert isinstance(hello, dict)
        assert hello["version"] == "2.0" and hello["max-frame-size"] == 16380
        assert "pipelining" in hello["capabilities"] and "fragmentation" in hello["capabilities"]
        # Two NOTIFY frames in flight (pipelining), one of them fragmented in three.
        body = b"x" * 5000
        whole = spoa.encode_messages([("tfso-capture", [("rid", "a"), ("req", body)])])
        writer.write(spoa.frame(spoa.NOTIFY, spoa.encode_messages([("tfso-capture", [("rid", "b")])]),
                                stream_id=7, frame_id=1))
        cut = [whole[:100], whole[100:3000], whole[3000:]]
        writer.write(spoa.frame(spoa.NOTIFY, cut[0], flags=0, stream_id=9, frame_id=4))
        writer.write(spoa.frame(spoa.UNSET, cut[1], flags=0, stream_id=9, frame_id=4))
        writer.write(spoa.frame(spoa.UNSET, cut[2], flags=spoa.FIN, stream_id=9, frame_id=4))
        acks = [await _read_frame(reader) for _ in range(2)]
        assert sorted((a[0], a[2], a[3]) for a in acks) == [(spoa.ACK, 7, 1), (spoa.ACK, 9, 4)]
        # An aborted fragmented frame is dropped without an ACK; the next one is acknowledged.
        writer.write(spoa.frame(spoa.NOTIFY, cut[0], flags=0, stream_id=11, frame_id=1))
        writer.write(spoa.frame(spoa.UNSET, b"", flags=spoa.FIN | spoa.ABORT, stream_id=11, frame_id=1))
        writer.write(spoa.frame(spoa.NOTIFY, spoa.encode_messages([("tfso-capture", [("rid", "c")])]),
                                stream_id=12, frame_id=1))
        ack = await _read_frame(reader)
        assert (ack[0], ack[2], ack[3]) == (spoa.ACK, 12, 1)
        writer.write(spoa.frame(spoa.HAPROXY_DISCONNECT, spoa.encode_kv(
            [("status-code", 0), ("message", "")])))
        ftype, *_ = await _read_frame(reader)
        assert ftype == spoa.AGENT_DISCONNECT
        assert await reader.read() == b""  # the agent closed the connection
        writer.close()
        await agent.close()

    _run(main())
    assert [m[0][1]["rid"] for m in got] == ["b", "a", "c"]
    assert got[1][0][1]["req"] == b"x" * 5000


def test_healthcheck_hello_gets_a_hello_and_a_close() -> None:
    async def main() -> None:
        agent = spoa.Agent(lambda m: None)
        port = await agent.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_hello(healthcheck=True))
        assert (await _read_frame(reader))[0] == spoa.AGENT_HELLO
        assert await reader.read() == b""
        writer.close()
        await agent.close()

    _run(main())


def test_bad_hello_gets_a_disconnect_with_the_status() -> None:
    async def main() -> None:
        agent = spoa.Agent(lambda m: None)
        port = await agent.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(spoa.frame(spoa.HAPROXY_HELLO, spoa.encode_kv([("supported-versions", "1.0")])
                                + spoa.encode_string("max-frame-size") + spoa.encode_uint32(16380)))
        ftype, _, _, _, kv = await _read_frame(reader)
        assert ftype == spoa.AGENT_DISCONNECT
        assert isinstance(kv, dict) and kv["status-code"] == spoa.ST_BAD_VERSION
        writer.close()
        await agent.close()

    _run(main())
