"""What lets test modules run side by side (pytest-xdist workers, or several runs on one machine).

- `machine_lock(name)`: an exclusive lock held across processes of this machine (fcntl on a file
  in the temp dir), for things every run shares: docker images, the shared dockerd.
- `run_dir(config)`: a folder shared by every worker of this run (the controller's basetemp;
  under xdist each worker's own basetemp is a `popen-gwN` folder inside it).
- `once_per_run(config, name, fn)`: `fn()` runs in the first worker that asks, the others wait
  for it and skip it; the marker it leaves tells the controller at the end that it ran.
- `CHECKOUT_ID`, `docker_name(what)`: names on the shared dockerd carry a hash of this checkout
  and venv, so two checkouts (worktrees, CI runners) on one machine never list, replace or
  sweep each other's containers and images.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

LOCK_DIR = Path(tempfile.gettempdir()) / "tfso-test-locks"
ROOT = Path(__file__).resolve().parents[2]
CHECKOUT_ID = hashlib.sha256(f"{ROOT}\0{sys.prefix}".encode()).hexdigest()[:8]
DOCKER_SWEEP = "docker-sweep"  # the Docker suite's start sweep; its marker asks for the end sweep


@contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Hold the lock `name` (blocking) for the body; released when the process dies, too."""
    LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
    fd = os.open(LOCK_DIR / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def run_dir(config: pytest.Config) -> Path:
    """The folder every worker of this run shares (serial run: the basetemp itself)."""
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return base.parent if is_worker(config) else base


def once_per_run(config: pytest.Config, name: str, fn: Callable[[], object]) -> bool:
    """Run `fn` once for the whole run (all workers); True in the worker that ran it."""
    marker = run_dir(config) / f"{name}.done"
    with machine_lock(f"run-{name}"):
        if marker.exists():
            return False
        fn()
        marker.write_text(str(os.getpid()))
        return True


def ran_in_this_run(config: pytest.Config, name: str) -> bool:
    """Whether some worker of this run did `once_per_run(config, name, ...)`."""
    return (run_dir(config) / f"{name}.done").exists()


def docker_name(what: str, kind: str = "t") -> str:
    """A deployment name on the shared dockerd that only this checkout uses: `t<id4>_<what>`.

    Kind `t` is swept at the start and end of the run (tests/integration/docker/conftest.py);
    a module outside that folder, whose containers may be running when the sweep starts, uses
    another kind and removes its own. Four hex digits keep the router's admin socket path (which
    holds the name) under HAProxy's limit; the old `t_` prefix never matches (`_` is not hex).
    """
    return f"{kind}{CHECKOUT_ID[:4]}_{what}"
