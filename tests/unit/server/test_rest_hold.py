"""What a connection does with bytes that arrive while its fast predict waits (rest._Handler):
it keeps them, in order, without touching the socket's reading state, and pauses reading only
when a client sends far ahead (rest._HOLD_MAX), resuming once the answer is out."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from orchestrator.server import rest


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.calls: list[str] = []

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def close(self) -> None:
        self.calls.append("close")


def handler() -> tuple[Any, Transport]:
    core = SimpleNamespace(metrics=SimpleNamespace(versions=None, renderers=[]))
    api = rest.RestApi(core)  # type: ignore[arg-type]
    proto = api.server()()
    transport = Transport()
    proto.connection_made(transport)
    return proto, transport


def test_bytes_behind_a_waiting_call_are_kept_without_pausing() -> None:
    async def main() -> None:
        proto, transport = handler()
        waiting = asyncio.get_running_loop().create_future()
        proto.hold(waiting)
        proto.data_received(b"GET /v1/models/m HTTP/1.1\r\n")
        proto.data_received(b"Host: h\r\n")
        assert transport.calls == [] and proto.held == b"GET /v1/models/m HTTP/1.1\r\nHost: h\r\n"
        waiting.cancel()
        proto.connection_lost(None)

    asyncio.run(main())


def test_a_client_far_ahead_is_paused_then_resumed_after_the_answer() -> None:
    async def main() -> None:
        proto, transport = handler()
        waiting = asyncio.get_running_loop().create_future()
        proto.hold(waiting)
        chunk = b"x" * 4096
        for _ in range(rest._HOLD_MAX // len(chunk)):
            proto.data_received(chunk)
        assert transport.calls == []
        proto.data_received(chunk)  # past the limit
        assert transport.calls == ["pause"]
        proto.data_received(chunk)  # already on its way when reading paused: kept, no second pause
        assert transport.calls == ["pause"]
        proto.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False)
        assert transport.out[0].startswith(b"HTTP/1.1 200 OK")
        assert transport.calls[:2] == ["pause", "resume"]
        assert proto.held == b"" and not proto.paused  # what was held went on to be parsed
        waiting.cancel()
        proto.connection_lost(None)

    asyncio.run(main())
