"""Running session calls off the event loop, one by one or batched.

`DirectRunner` hands each call to the thread pool. `BatchingRunner` (--enable_batching) queues
calls per (servable, feeds, fetches); a batch closes when it holds `max_batch_size` rows or
`batch_timeout_micros` have passed since its first task (and a thread is free to run it; until
then it keeps taking tasks), and runs as ONE session call on the
inputs concatenated along dimension 0; outputs are split back by rows. Up to `num_batch_threads`
batches of one queue run at once; when `max_enqueued_batches` batches are waiting, new tasks fail
with RESOURCE_EXHAUSTED, as TF Serving's shared batch scheduler does. A batch may be padded up to
the next `allowed_batch_sizes` entry by repeating its first row.

With `batch_timeout_micros: 0` a batch closes at the end of the event-loop round its first task
arrived in, not at once: every request that arrived in the same round (one `select`) shares the
session call, which is what makes batching pay for small models (#17). A batch of a small graph
whose typical run is under TFS_LOOP_RUN_MAX_US runs right on the event loop, like
`DirectRunner`'s tiny runs, instead of paying for the hand-off to a pool thread and back.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from typing import Any

import numpy as np

from orchestrator.server.config import BatchingOptions
from orchestrator.server.runner import RunKey, Servable
from orchestrator.server.status import ServingStatus, invalid


class RunPool:
    """Threads that run session calls; lighter than run_in_executor for tiny calls.

    A task is queued with its event-loop future; the worker sets the result back on the loop with
    one call_soon_threadsafe. TensorFlow releases the GIL while a session runs.
    """

    def __init__(self, threads: int) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"tfs-run-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, fut, fn, args = item
            try:
                result = fn(*args)
            except BaseException as e:  # handed to the awaiting request
                loop.call_soon_threadsafe(_set_exception, fut, e)
            else:
                loop.call_soon_threadsafe(_set_result, fut, result)

    def submit(self, fn: Any, *args: Any) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((loop, fut, fn, args))
        return fut

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


def _set_result(fut: asyncio.Future, result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def loop_run_max_s() -> float:
    """TFS_LOOP_RUN_MAX_US (default 500; 0 = never): the longest typical session run done inline."""
    try:
        return max(0.0, float(os.environ.get("TFS_LOOP_RUN_MAX_US", "500"))) / 1e6
    except ValueError:
        return 500e-6


def _timed_run(servable: Any, key: RunKey, arrays: list[np.ndarray]) -> list[np.ndarray]:
    t0 = time.perf_counter()
    out = servable.run(key, arrays)
    _note_cost(servable, key, time.perf_counter() - t0)
    return out


def _note_cost(servable: Any, key: RunKey, seconds: float) -> None:
    costs = servable.run_seconds
    prev = costs.get(key)
    if prev is None:
        costs[key] = seconds
    elif seconds > _OUTLIER * prev:
        # Most likely the thread lost its core mid-run (a busy machine), not a slower model: a
        # small step, so one preemption does not send a tiny model to the pool for many runs,
        # while a model that really got slower still crosses the limit after a few dozen runs.
        costs[key] = prev + _OUTLIER_WEIGHT * (seconds - prev)
    else:
        costs[key] = prev + 0.25 * (seconds - prev)


_OUTLIER = 4.0
_OUTLIER_WEIGHT = 0.02


class DirectRunner:
    """Session runs go to the pool, except tiny ones, which run right on the event loop.

    A run on a simple graph (`Servable.inline_run`) whose typical (moving-average) duration is
    below TFS_LOOP_RUN_MAX_US costs less than the hand-off to a pool thread and back, so it runs
    in the calling (event-loop) thread. Each key's first run, and any key whose runs grow slower,
    go to the pool.
    """

    def __init__(self, pool: RunPool, loop_max_s: float | None = None) -> None:
        self._pool = pool
        self._loop_max_s = loop_run_max_s() if loop_max_s is None else loop_max_s

    async def run(
        self, servable: Servable, key: RunKey, arrays: list[np.ndarray]
    ) -> list[np.ndarray]:
        servable.inflight += 1
        try:
            return await self.execute(servable, key, arrays)
        finally:
            servable.inflight -= 1

    async def execute(
        self, servable: Servable, key: RunKey, arrays: list[np.ndarray]
    ) -> list[np.ndarray]:
        """One session call (a request's, or a whole batch's): on the loop when tiny, else on the
        pool; either way its time feeds the typical cost this rule reads."""
        if getattr(servable, "run_seconds", None) is None:
            return await self._pool.submit(servable.run, key, arrays)
        if self.inline(servable, key):
            t0 = time.perf_counter()
            try:
                return servable.run(key, arrays)
            finally:
                _note_cost(servable, key, time.perf_counter() - t0)
        return await self._pool.submit(_timed_run, servable, key, arrays)

    def inline(self, servable: Servable, key: RunKey) -> bool:
        """Whether a call of `key` runs right on the loop (the class docstring's rule)."""
        costs = getattr(servable, "run_seconds", None)
        if costs is None:
            return False
        cost = costs.get(key)
        return cost is not None and cost < self._loop_max_s and servable.inline_run

    def run_inline(self, servable: Servable, key: RunKey, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """`run` for a call `inline` allows, without a coroutine (the REST fast lane)."""
        servable.inflight += 1
        t0 = time.perf_counter()
        try:
            return servable.run(key, arrays)
        finally:
            _note_cost(servable, key, time.perf_counter() - t0)
            servable.inflight -= 1

    async def close(self) -> None:
        pass


class _Task:
    __slots__ = ("arrays", "future", "rows")

    def __init__(self, arrays: list[np.ndarray], rows: int, future: Any) -> None:
        self.arrays = arrays
        self.rows = rows
        self.future = future


class _Queue:
    """One batching queue (per servable and signature call)."""

    def __init__(self, runner: BatchingRunner, servable: Servable, key: RunKey) -> None:
        self.runner = runner
        # --enable_per_model_batching_parameters: the version's own batching_params.pbtxt
        self.options: BatchingOptions = getattr(servable, "batching_options", None) or runner.options
        self.servable = servable
        self.key = key
        self.open: list[_Task] = []
        self.open_rows = 0
        self.waiting: list[list[_Task]] = []  # closed batches not yet running
        self.running = 0
        self.timer: asyncio.Handle | None = None
        self.overdue = False  # the open batch's timeout passed while every thread was busy

    def submit(self, task: _Task) -> None:
        opts = self.options
        if task.rows > opts.max_batch_size:
            raise invalid(
                f"Task size {task.rows} is larger than maximum input batch size "
                f"{opts.max_batch_size}"
            )
        if self.open_rows + task.rows > opts.max_batch_size:
            self._close_open()
        if not self.open and len(self.waiting) >= opts.max_enqueued_batches:
            raise ServingStatus(
                "RESOURCE_EXHAUSTED",
                "The batch scheduling queue to which this task was submitted is full",
            )
        self.open.append(task)
        self.open_rows += task.rows
        if self.open_rows >= opts.max_batch_size:
            self._close_open()
        elif self.timer is None:
            loop = asyncio.get_running_loop()
            if opts.batch_timeout_micros <= 0:  # the end of this loop round (module docstring)
                self.timer = loop.call_soon(self._on_timeout)
            else:
                self.timer = loop.call_later(opts.batch_timeout_micros / 1e6, self._on_timeout)
        self._dispatch()

    def _on_timeout(self) -> None:
        self.timer = None
        if not self.open:
            return
        if self.waiting or self.running >= self.options.num_batch_threads:
            # No thread could run it now: closing it would only fix its size. It stays open,
            # taking the tasks that arrive meanwhile (up to max_batch_size), and closes the
            # moment a thread frees (`_run`). With clients that wait for their answer before
            # sending again, this keeps batches full instead of alternating big and small ones.
            self.overdue = True
            return
        self._close_open()
        self._dispatch()

    def _close_open(self) -> None:
        if self.timer is not None:  # a TimerHandle, or the Handle of the end-of-round close
            self.timer.cancel()
            self.timer = None
        self.overdue = False
        if self.open:
            self.waiting.append(self.open)
            self.open = []
            self.open_rows = 0

    def _dispatch(self) -> None:
        opts = self.options
        while self.waiting and self.running < opts.num_batch_threads:
            batch = self.waiting.pop(0)
            self.running += 1
            asyncio.get_running_loop().create_task(self._run(batch))
        # With no timeout, whatever gathered while all threads were busy goes next (once the
        # round that brought the open batch's tasks has ended: its close is still pending).
        if (
            self.open
            and opts.batch_timeout_micros <= 0
            and self.timer is None
            and self.running < opts.num_batch_threads
        ):
            self._close_open()
            self._dispatch()

    async def _run(self, batch: list[_Task]) -> None:
        try:
            await self._execute(batch)
        finally:
            self.running -= 1
            if self.open and not self.waiting and (
                self.overdue or self.options.batch_timeout_micros <= 0
            ):
                self._close_open()
            self._dispatch()

    async def _execute(self, batch: list[_Task]) -> None:
        servable = self.servable
        started = time.monotonic()
        servable.inflight += 1
        try:
            groups = [batch] if len(batch) == 1 else _compatible_groups(batch)
            for group in groups:
                try:
                    inputs, total = _concat(group, self.options)
                    outs = await self.runner.direct.execute(servable, self.key, inputs)
                    self.runner.record(servable.name, len(group), total, getattr(servable, "version", 0))
                    _split(group, outs, total)
                except Exception as e:
                    for t in group:
                        if not t.future.done():
                            t.future.set_exception(e)
        finally:
            servable.inflight -= 1
            self.runner.queuing_latency_us = (time.monotonic() - started) * 1e6


def _compatible_groups(batch: list[_Task]) -> list[list[_Task]]:
    groups: dict[tuple, list[_Task]] = {}
    for t in batch:
        sig = tuple((a.shape[1:], a.dtype.str) for a in t.arrays)
        groups.setdefault(sig, []).append(t)
    return list(groups.values())


def _concat(group: list[_Task], opts: BatchingOptions) -> tuple[list[np.ndarray], int]:
    total = sum(t.rows for t in group)
    padded = total
    for size in opts.allowed_batch_sizes:
        if size >= total:
            padded = size
            break
    n = len(group[0].arrays)
    inputs = []
    for i in range(n):
        parts = [t.arrays[i] for t in group]
        if padded > total:
            first = parts[0][:1]
            parts.append(np.repeat(first, padded - total, axis=0))
        inputs.append(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0))
    return inputs, total


def _split(group: list[_Task], outs: list[np.ndarray], total: int) -> None:
    if len(group) == 1 and all(o.ndim > 0 for o in outs):
        t = group[0]
        if not t.future.done():  # done: its caller gave up (a deadline) and cancelled it
            t.future.set_result([o[: t.rows] if o.shape[0] != t.rows else o for o in outs])
        return
    for o in outs:
        if o.ndim == 0 or o.shape[0] < total:
            raise ServingStatus(
                "FAILED_PRECONDITION",
                "Batched output tensor has 0 dimensions or its first dimension does not match "
                "the batch size",
            )
    start = 0
    for t in group:
        if not t.future.done():  # a caller that gave up must not fail the rest of its batch
            t.future.set_result([o[start : start + t.rows] for o in outs])
        start += t.rows


class BatchingRunner:
    def __init__(
        self, pool: RunPool, options: BatchingOptions, loop_max_s: float | None = None
    ) -> None:
        self.pool = pool
        self.options = options
        self.direct = DirectRunner(pool, loop_max_s)  # also runs each batch (`execute`)
        self.on_batch: Any = None  # callable(model_name, batch_size, version) for metrics
        self.queuing_latency_us = 0.0

    def record(self, model: str, tasks: int, rows: int, version: int = 0) -> None:
        if self.on_batch is not None:
            self.on_batch(model, rows, version)

    async def run(
        self, servable: Servable, key: RunKey, arrays: list[np.ndarray]
    ) -> list[np.ndarray]:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        if not self.join(servable, key, arrays, fut):
            return await self.direct.run(servable, key, arrays)
        return await fut

    def join(self, servable: Servable, key: RunKey, arrays: list[np.ndarray], sink: Any) -> bool:
        """Queue one call for a batch; its outputs (or error) go to `sink`, which has a future's
        done / set_result / set_exception (a future, or the REST fast path's callback). False when
        the call cannot be batched: inputs without a batch dimension (scalars) or of differing
        rows, or batching off for this servable. Raises what the queue refuses (too many rows,
        queue full) before anything is queued."""
        if not arrays or any(a.ndim == 0 for a in arrays):
            return False
        rows = arrays[0].shape[0]
        if any(a.shape[0] != rows for a in arrays) or getattr(servable, "batching_off", False):
            return False
        q = servable.batch_queues.get(key)
        if q is None:
            q = servable.batch_queues[key] = _Queue(self, servable, key)
        q.submit(_Task(arrays, rows, sink))
        return True

    async def close(self) -> None:
        pass


Runner = Any  # DirectRunner | BatchingRunner
