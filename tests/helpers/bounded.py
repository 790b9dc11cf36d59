"""Run a callable under a time and memory bound (for property-based tests of parsers)."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

MAX_SECONDS = 5.0
MAX_PEAK_BYTES = 64 * 1024 * 1024


def bounded(fn: Callable[[], Any], *, allowed: tuple[type[BaseException], ...]) -> Any:
    """fn() -> its value, or the allowed exception it raised; anything else fails the test.

    Fails too when fn took longer than MAX_SECONDS or allocated more than MAX_PEAK_BYTES at
    once (tracemalloc sees Python and numpy allocations).
    """
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result: Any = fn()
    except allowed as e:
        result = e
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < MAX_SECONDS, f"took {elapsed:.1f}s"
    assert peak < MAX_PEAK_BYTES, f"peak allocation {peak / 2**20:.0f} MiB"
    return result
