"""`tfsctl` for the test suite: the real CLI, with the stand-in images' host mounts.

The stand-ins (tests/helpers/standin_image.py) run on the host's Python and haproxy, so every
container the Docker runtime creates gets those folders read-only (`DockerRuntime.host_mounts`).
No spec carries them: production specs cannot ask for host mounts. Run as
`python tests/helpers/standin_tfsctl.py ARGS...` (`standin_image.tfsctl_command()`).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator.cli import main  # noqa: E402
from orchestrator.runtime.docker.runtime import DockerRuntime  # noqa: E402
from tests.helpers.standin_image import host_mounts  # noqa: E402

if __name__ == "__main__":
    DockerRuntime.host_mounts = host_mounts()
    sys.argv[0] = "tfsctl"
    main()
