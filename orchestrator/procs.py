"""Is a recorded process still the same process? /proc start times tell a reused pid apart."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when it is gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def process_alive(pid: int, started: int | None, markers: Iterable[str] = ()) -> bool:
    """`pid` still runs the process we recorded: not gone, not a zombie, and not a reused pid.

    The start time identifies the process; the command line is checked (for one of `markers`)
    only when no start time was recorded, since /proc/PID/cmdline can read empty while a busy
    process holds its memory map lock.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    if started is not None:
        return int(fields[19]) == started
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return any(marker in cmdline for marker in markers)
