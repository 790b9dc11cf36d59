"""A local stand-in for `tensorflow/serving`, built without any registry (tests and bench only).

No registry is reachable here, so the real image cannot be pulled. The stand-in keeps the
official image's contract: entrypoint `/usr/bin/tf_serving_entrypoint.sh` running
`tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=${MODEL_NAME}
--model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"`, env `MODEL_BASE_PATH=/models`,
`MODEL_NAME=model`, ports 8500/8501. Its `tensorflow_model_server` is our `tfs-model-server`.

The image is a tiny rootfs (Debian's static busybox and two scripts) imported from a tar built
here (`docker import`, no base image). The host's Python, libraries and this project's venv are
not in it: the Docker runtime adds them as read-only bind mounts (`DockerRuntime.host_mounts`,
set by `tfsctl_command()`'s wrapper, tests/helpers/standin_tfsctl.py; no spec names them). The
image is labelled with a hash of its content and rebuilt only when that changes (a new busybox, a
new venv), under a machine-wide lock so parallel workers never import it twice at once. Its name
carries a hash of the checkout and venv (`STANDIN_REPO`), so two checkouts on one dockerd never
replace each other's image.

The router's stand-in (`tfso-test/haproxy:standin`, for the official `haproxy:2.6`) is built
the same way: busybox and a copy of the official image's `docker-entrypoint.sh` (`haproxy ARGS`
becomes `haproxy -W -db ARGS`), with the host's `/usr/sbin/haproxy` and its libraries mounted
read-only the same way (`standin_mounts(router=True)` adds `/usr/sbin`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

from orchestrator.runtime.docker.api import DockerApi, Mount
from tests.helpers.parallel import CHECKOUT_ID, machine_lock

ROOT = Path(__file__).resolve().parents[2]
# One image name per checkout and venv: its server script is this venv's, so two checkouts on one
# dockerd (parallel runs, a second worktree) must not rebuild each other's image under one name.
STANDIN_REPO = f"tfso-test/serving-{CHECKOUT_ID}"
STANDIN_TAG = "standin"
STANDIN_REF = f"{STANDIN_REPO}:{STANDIN_TAG}"
BROKEN_REF = f"{STANDIN_REPO}:broken"  # its server exits at once with an error, like a bad flag
ROUTER_REPO = "tfso-test/haproxy"
ROUTER_REF = f"{ROUTER_REPO}:standin"
LABEL = "io.tfso.test-image"

ENTRYPOINT = """#!/bin/sh
# Stand-in for tensorflow/serving's tools/docker/tf_serving_entrypoint.sh: the same contract.
tensorflow_model_server --port=8500 --rest_api_port=8501 \\
  --model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} \\
  "$@"
"""

ROUTER_ENTRYPOINT = """#!/bin/sh
# The official haproxy image's docker-entrypoint.sh: the same contract.
set -e
if [ "${1#-}" != "$1" ]; then
  set -- haproxy "$@"
fi
if [ "$1" = 'haproxy' ]; then
  shift
  set -- haproxy -W -db "$@"
fi
exec "$@"
"""

BROKEN_SERVER = """#!/bin/sh
echo "tensorflow_model_server (stand-in): refusing to start: unknown flag --bogus_flag_for_tests" >&2
exit 1
"""


def server_script() -> Path:
    """This venv's `tfs-model-server` console script (its shebang names the venv's python)."""
    return Path(sys.prefix) / "bin" / "tfs-model-server"


def standin_mounts(*, router: bool = False) -> list[dict[str, str]]:
    """Host folders the stand-ins need, as {source, target} (same path inside).

    `router`: also `/usr/sbin`, where the router stand-in finds the host's haproxy.
    """
    wanted = ["/usr/lib", "/usr/lib64", "/lib", "/lib64", "/etc",
              os.path.realpath(sys.base_prefix), str(ROOT), sys.prefix]
    if router:
        wanted.append("/usr/sbin")
    interpreter = os.path.realpath(sys.executable)
    mounts: list[dict[str, str]] = []
    for target in wanted:
        if not os.path.exists(target):
            continue
        if any(target == m["target"] or target.startswith(m["target"] + "/") for m in mounts):
            continue
        mounts.append({"source": os.path.realpath(target), "target": target})
    if not any(interpreter.startswith(m["target"] + "/") for m in mounts):
        mounts.append({"source": interpreter, "target": interpreter})
    return mounts


HOST_MOUNTS_ENV = "TFSO_TEST_HOST_MOUNTS"
"""JSON [[source, target], ...] for the wrapper instead of the stand-ins' mounts (a fault test)."""
STANDIN_TFSCTL = Path(__file__).with_name("standin_tfsctl.py")


def host_mounts() -> tuple[Mount, ...]:
    """What the Docker runtime mounts into every container under test: $TFSO_TEST_HOST_MOUNTS,
    else the host folders the stand-ins (replica and router) run on."""
    given = os.environ.get(HOST_MOUNTS_ENV)
    if given:
        return tuple(Mount(source, target) for source, target in json.loads(given))
    return tuple(Mount(m["source"], m["target"]) for m in standin_mounts(router=True))


def tfsctl_command() -> list[str]:
    """`tfsctl` as the tests run it: the real CLI, with the stand-ins' host mounts."""
    return [sys.executable, str(STANDIN_TFSCTL)]


def _add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o755,
         link: str | None = None, directory: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = 0
    if directory:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif link is not None:
        info.type = tarfile.SYMTYPE
        info.linkname = link
        tar.addfile(info)
    else:
        assert data is not None
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def rootfs_tar(server: str) -> bytes:
    """The image's whole filesystem as a tar: busybox, the entrypoint and the server script."""
    busybox = Path(os.path.realpath("/bin/busybox")).read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for folder in ("usr", "usr/bin", "models", "config"):
            _add(tar, folder, directory=True)
        _add(tar, "tmp", directory=True, mode=0o1777)
        _add(tar, "bin", link="usr/bin")
        _add(tar, "usr/bin/busybox", data=busybox)
        for applet in ("sh", "cat", "echo", "ls", "sleep", "env"):
            _add(tar, f"usr/bin/{applet}", link="busybox")
        _add(tar, "usr/bin/tf_serving_entrypoint.sh", data=ENTRYPOINT.encode())
        _add(tar, "usr/bin/tensorflow_model_server", data=server.encode())
    return buffer.getvalue()


def router_rootfs_tar() -> bytes:
    """The router stand-in's filesystem: busybox and the official entrypoint script."""
    busybox = Path(os.path.realpath("/bin/busybox")).read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for folder in ("usr", "usr/bin", "usr/local", "usr/local/bin", "usr/local/etc",
                       "usr/local/etc/haproxy", "var", "var/lib", "var/lib/haproxy"):
            _add(tar, folder, directory=True)
        _add(tar, "tmp", directory=True, mode=0o1777)
        _add(tar, "bin", link="usr/bin")
        _add(tar, "usr/bin/busybox", data=busybox)
        for applet in ("sh", "cat", "echo", "ls", "sleep", "env"):
            _add(tar, f"usr/bin/{applet}", link="busybox")
        _add(tar, "usr/local/bin/docker-entrypoint.sh", data=ROUTER_ENTRYPOINT.encode())
    return buffer.getvalue()


def _router_changes(content_hash: str) -> list[str]:
    return [
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]',
        'CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]',
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "WORKDIR /var/lib/haproxy",
        f"LABEL {LABEL}={content_hash}",
    ]


def ensure_router_image(api: DockerApi | None = None) -> str:
    """Build (or reuse) the router stand-in; returns its reference."""
    api = api or DockerApi()
    if not Path("/usr/sbin/haproxy").exists():
        raise FileNotFoundError("/usr/sbin/haproxy is missing: run scripts/setup_system.sh")
    tar = router_rootfs_tar()
    content_hash = hashlib.sha256(tar + "\n".join(_router_changes("")).encode()).hexdigest()[:16]
    with machine_lock("image-" + ROUTER_REF.replace("/", "_").replace(":", "_")):
        if api.image_present(ROUTER_REF) and api.image_labels(ROUTER_REF).get(LABEL) == content_hash:
            return ROUTER_REF
        api.import_image(tar, ROUTER_REF, _router_changes(content_hash))
    return ROUTER_REF


def _changes(content_hash: str) -> list[str]:
    return [
        'ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]',
        "ENV MODEL_BASE_PATH=/models",
        "ENV MODEL_NAME=model",
        "ENV PATH=/usr/bin:/bin",
        "ENV HOME=/tmp",
        "ENV PYTHONUNBUFFERED=1",
        "ENV TF_CPP_MIN_LOG_LEVEL=2",
        "EXPOSE 8500",
        "EXPOSE 8501",
        f"LABEL {LABEL}={content_hash}",
    ]


def _ensure(api: DockerApi, ref: str, server: str) -> str:
    tar = rootfs_tar(server)
    content_hash = hashlib.sha256(tar + "\n".join(_changes("")).encode()).hexdigest()[:16]
    # Parallel workers (and other runs on this machine) check and build one at a time.
    with machine_lock("image-" + ref.replace("/", "_").replace(":", "_")):
        if api.image_present(ref) and api.image_labels(ref).get(LABEL) == content_hash:
            return ref
        api.import_image(tar, ref, _changes(content_hash))
    return ref


def ensure_standin_image(api: DockerApi | None = None) -> str:
    """Build (or reuse) the stand-in image; returns its reference."""
    api = api or DockerApi()
    script = server_script()
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: install the project (`make install`)")
    return _ensure(api, STANDIN_REF, f'#!/bin/sh\nexec {script} "$@"\n')


def ensure_broken_image(api: DockerApi | None = None) -> str:
    """Same contract, but its server exits at once with an error (a container that dies at start)."""
    return _ensure(api or DockerApi(), BROKEN_REF, BROKEN_SERVER)
