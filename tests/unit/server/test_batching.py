"""BatchingRunner against a fake servable: batches form, split back, and a full queue refuses."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from orchestrator.server.batching import BatchingRunner, DirectRunner, RunPool
from orchestrator.server.config import BatchingOptions
from orchestrator.server.runner import RunKey
from orchestrator.server.status import ServingStatus

KEY = RunKey(("x:0",), ("y:0",))


class FakeServable:
    name = "fake"

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.inflight = 0
        self.batch_queues: dict = {}
        self.calls: list[int] = []
        self.gate = gate

    def run(self, key, arrays):
        if self.gate is not None:
            assert self.gate.wait(10)
        self.calls.append(arrays[0].shape[0])
        return [arrays[0] * 2]


def run(coro):
    return asyncio.run(coro)


async def until(cond, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def test_concurrent_tasks_form_one_batch_and_split_back():
    servable = FakeServable()
    runner = BatchingRunner(
        RunPool(2),
        BatchingOptions(max_batch_size=8, batch_timeout_micros=50_000, num_batch_threads=1),
    )

    async def main():
        return await asyncio.gather(
            *(runner.run(servable, KEY, [np.array([[float(i)]])]) for i in range(5))
        )

    outs = run(main())
    assert [o[0].tolist() for o in outs] == [[[2.0 * i]] for i in range(5)]
    assert servable.calls == [5]


def test_full_batch_closes_without_waiting_for_the_timeout():
    servable = FakeServable()
    runner = BatchingRunner(
        RunPool(2),
        BatchingOptions(max_batch_size=2, batch_timeout_micros=60_000_000, num_batch_threads=2),
    )

    async def main():
        return await asyncio.wait_for(
            asyncio.gather(*(runner.run(servable, KEY, [np.ones((1, 1))]) for _ in range(4))), 10
        )

    run(main())
    assert servable.calls == [2, 2]


def test_allowed_batch_sizes_pad_and_trim():
    servable = FakeServable()
    runner = BatchingRunner(
        RunPool(1),
        BatchingOptions(
            max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1, allowed_batch_sizes=(4,)
        ),
    )
    out = run(runner.run(servable, KEY, [np.array([[1.0], [2.0], [3.0]])]))
    assert servable.calls == [4]
    assert out[0].tolist() == [[2.0], [4.0], [6.0]]


def test_full_queue_is_resource_exhausted():
    gate = threading.Event()
    servable = FakeServable(gate)
    opts = BatchingOptions(
        max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1, num_batch_threads=1
    )
    runner = BatchingRunner(RunPool(1), opts)

    async def main():
        first = asyncio.ensure_future(runner.run(servable, KEY, [np.ones((1, 1))]))  # running
        await asyncio.sleep(0)
        second = asyncio.ensure_future(runner.run(servable, KEY, [np.ones((1, 1))]))  # queued
        await asyncio.sleep(0)
        with pytest.raises(ServingStatus) as e:
            await runner.run(servable, KEY, [np.ones((1, 1))])
        gate.set()
        await asyncio.gather(first, second)
        return e.value

    err = run(main())
    assert err.code == "RESOURCE_EXHAUSTED"
    assert err.message == "The batch scheduling queue to which this task was submitted is full"


def test_errors_reach_every_task_of_the_batch():
    class Broken(FakeServable):
        def run(self, key, arrays):
            raise ServingStatus("INVALID_ARGUMENT", "boom")

    runner = BatchingRunner(
        RunPool(1), BatchingOptions(max_batch_size=4, batch_timeout_micros=20_000)
    )

    async def main():
        return await asyncio.gather(
            *(runner.run(Broken(), KEY, [np.ones((1, 1))]) for _ in range(2)),
            return_exceptions=True,
        )

    results = run(main())
    assert all(isinstance(r, ServingStatus) and r.message == "boom" for r in results)


def test_direct_runner_counts_inflight():
    servable = FakeServable()
    out = run(DirectRunner(RunPool(1)).run(servable, KEY, [np.ones((2, 1))]))
    assert out[0].shape == (2, 1) and servable.inflight == 0


class InlineServable(FakeServable):
    inline_run = True

    def __init__(self) -> None:
        super().__init__()
        self.run_seconds: dict = {}
        self.threads: list[str] = []

    def run(self, key, arrays):
        self.threads.append(threading.current_thread().name)
        return super().run(key, arrays)


def test_direct_runner_runs_cheap_keys_on_the_loop_after_the_first_run():
    servable = InlineServable()
    runner = DirectRunner(RunPool(1), loop_max_s=60.0)

    async def main():
        for _ in range(3):
            await runner.run(servable, KEY, [np.ones((1, 1))])

    run(main())
    main_thread = threading.current_thread().name
    assert servable.threads[0] != main_thread
    assert servable.threads[1:] == [main_thread, main_thread]
    assert KEY in servable.run_seconds and servable.inflight == 0


def test_direct_runner_never_runs_on_the_loop_when_disabled_or_not_simple():
    for servable, limit in ((InlineServable(), 0.0), (InlineServable(), 60.0)):
        if limit:
            servable.inline_run = False
        runner = DirectRunner(RunPool(1), loop_max_s=limit)

        async def main(runner=runner, servable=servable):
            for _ in range(3):
                await runner.run(servable, KEY, [np.ones((1, 1))])

        run(main())
        assert threading.current_thread().name not in servable.threads


def test_run_cost_estimate_shrugs_off_one_preempted_run_but_follows_a_real_slowdown():
    from orchestrator.server.batching import _note_cost

    servable = InlineServable()
    for _ in range(5):
        _note_cost(servable, KEY, 50e-6)
    _note_cost(servable, KEY, 20e-3)  # one run that lost its core for 20 ms
    assert servable.run_seconds[KEY] < 500e-6  # still cheap enough to run on the loop
    for _ in range(200):  # the model really is slow now
        _note_cost(servable, KEY, 20e-3)
    assert servable.run_seconds[KEY] > 500e-6


def test_a_batch_whose_timeout_passes_while_threads_are_busy_keeps_taking_tasks():
    """Closing it at the timeout could not make it run sooner; staying open fills it up."""
    gate = threading.Event()
    servable = FakeServable(gate)
    opts = BatchingOptions(max_batch_size=4, batch_timeout_micros=1_000, num_batch_threads=1)
    runner = BatchingRunner(RunPool(2), opts)

    async def main():
        x = [np.ones((1, 1))]
        first = [asyncio.ensure_future(runner.run(servable, KEY, x)) for _ in range(4)]
        await until(lambda: KEY in servable.batch_queues and servable.batch_queues[KEY].running)
        second = [asyncio.ensure_future(runner.run(servable, KEY, x))]
        await until(lambda: servable.batch_queues[KEY].overdue)  # timeout passed, thread busy
        second += [asyncio.ensure_future(runner.run(servable, KEY, x)) for _ in range(2)]
        await until(lambda: servable.batch_queues[KEY].open_rows == 3)
        gate.set()
        await asyncio.gather(*first, *second)

    run(main())
    assert servable.calls == [4, 3]


def test_no_timeout_closes_at_the_end_of_the_loop_round():
    """batch_timeout_micros 0: the tasks that arrive in one loop round share one session call
    (before, the first closed a batch of one on its own and the rest followed)."""
    servable = FakeServable()
    runner = BatchingRunner(
        RunPool(2), BatchingOptions(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1)
    )

    async def main():
        first = await asyncio.gather(
            *(runner.run(servable, KEY, [np.array([[float(i)]])]) for i in range(5))
        )
        later = await runner.run(servable, KEY, [np.array([[7.0]])])  # alone in its round
        return first, later

    first, later = run(main())
    assert [o[0].tolist() for o in first] == [[[2.0 * i]] for i in range(5)]
    assert later[0].tolist() == [[14.0]]
    assert servable.calls == [5, 1]


def test_tiny_batches_run_on_the_loop_once_their_cost_is_known():
    servable = InlineServable()
    runner = BatchingRunner(
        RunPool(1),
        BatchingOptions(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1),
        loop_max_s=10.0,
    )

    async def main():
        for _ in range(3):
            await asyncio.gather(*(runner.run(servable, KEY, [np.ones((1, 1))]) for _ in range(2)))
        return threading.current_thread().name

    loop_thread = run(main())
    assert servable.calls == [2, 2, 2]
    # The first batch's cost is unknown: it goes to the pool, and teaches the typical cost.
    assert servable.threads[0].startswith("tfs-run-") and KEY in servable.run_seconds
    assert servable.threads[1:] == [loop_thread, loop_thread]


def test_batches_of_big_graphs_stay_on_the_pool():
    servable = InlineServable()
    runner = BatchingRunner(
        RunPool(1),
        BatchingOptions(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1),
        loop_max_s=0.0,  # TFS_LOOP_RUN_MAX_US=0: never on the loop
    )

    async def main():
        for _ in range(3):
            await runner.run(servable, KEY, [np.ones((1, 1))])

    run(main())
    assert all(t.startswith("tfs-run-") for t in servable.threads)


def test_a_caller_that_gives_up_does_not_fail_the_rest_of_its_batch():
    """A deadline cancels one caller's future while its batch runs; the others still get theirs
    (before, setting the cancelled future's result raised, and every later task in the batch
    got InvalidStateError)."""
    gate = threading.Event()
    servable = FakeServable(gate)
    runner = BatchingRunner(
        RunPool(1), BatchingOptions(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1)
    )

    async def main():
        tasks = [
            asyncio.ensure_future(runner.run(servable, KEY, [np.array([[float(i)]])]))
            for i in range(3)
        ]
        await until(lambda: servable.batch_queues and servable.batch_queues[KEY].running)
        tasks[0].cancel()
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, *rest = run(main())
    assert isinstance(first, asyncio.CancelledError)
    assert [r[0].tolist() for r in rest] == [[[2.0]], [[4.0]]]
    assert servable.calls == [3]
