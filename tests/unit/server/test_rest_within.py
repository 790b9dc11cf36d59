"""rest.within: the REST timeout, armed only when the request's work suspends."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.server.rest import within


async def inline() -> int:
    return 7


async def suspends(seconds: float, value: int = 8) -> int:
    await asyncio.sleep(seconds)
    await asyncio.sleep(0)  # a bare yield too
    return value


async def fails_after_a_suspension() -> None:
    await asyncio.sleep(0)
    raise ValueError("boom")


def test_work_that_never_suspends_arms_no_timer() -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        calls = 0
        original = loop.call_at

        def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return original(*args, **kwargs)

        loop.call_at = counting  # type: ignore[method-assign]
        try:
            value = await within(inline(), 5.0)
        finally:
            loop.call_at = original  # type: ignore[method-assign]
        return value, calls

    assert asyncio.run(main()) == (7, 0)


def test_suspending_work_finishes_within_the_timeout() -> None:
    assert asyncio.run(within(suspends(0.01), 5.0)) == 8
    assert asyncio.run(within(suspends(0.01), None)) == 8


def test_suspending_work_past_the_timeout_raises_timeout_error_and_is_cancelled() -> None:
    finished = []

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            finished.append("cleaned up")

    async def main() -> None:
        await within(slow(), 0.05)

    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(main(), 10))
    assert finished == ["cleaned up"]


def test_errors_after_a_suspension_propagate() -> None:
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(within(fails_after_a_suspension(), 5.0))


def test_an_outside_cancel_is_a_cancel_not_a_timeout() -> None:
    async def main() -> str:
        task = asyncio.ensure_future(within(suspends(30), 60.0))
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "finished"

    assert asyncio.run(main()) == "cancelled"
