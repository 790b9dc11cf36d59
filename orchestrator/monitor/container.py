"""Prometheus as a container, for Docker deployments: a local image, never pulled.

No registry is reachable where this runs, so the image is built here (`docker import`, no base
image) from the host's Debian `prometheus` binary and the libraries `ldd` names, and labelled with
a hash of that content: it is rebuilt only when the package changes. Nothing is ever pulled.

The container runs on the host network (it scrapes replicas and the router on 127.0.0.1 and
listens on 127.0.0.1 only), as the calling user (uid:gid, so `.tfso/monitor/NAME/` stays theirs),
with every capability dropped, and with `.tfso/monitor/NAME/` mounted read-write at the same path,
so prometheus.yml, the rules, the file_sd lists and the TSDB are the same files as for a process.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from orchestrator.monitor import MonitorError

IMAGE_REPO = "tfso/prometheus"
LABEL = "io.tfso.image-content"
MONITOR_LABEL = "io.tfso.monitor"


def _libraries(binary: str) -> list[str]:
    """The shared libraries (and loader) `binary` needs, as real paths; [] for a static binary."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:  # "not a dynamic executable"
        return []
    libs = []
    for line in out.stdout.splitlines():
        match = re.search(r"(/\S+)", line.split("=>")[-1])
        if match and os.path.exists(match.group(1)):
            libs.append(match.group(1))
    return libs


def _files(binary: str) -> dict[str, str]:
    """Path in the image -> path on the host."""
    files = {"/bin/prometheus": os.path.realpath(binary)}
    for lib in _libraries(binary):
        files[lib] = os.path.realpath(lib)
    return files


def content_hash(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for inside, host in sorted(files.items()):
        st = os.stat(host)
        digest.update(f"{inside}\0{host}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def rootfs_tar(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in ("bin", "etc", "tmp", "lib", "lib64", "usr", "usr/lib"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        for name, text in (("etc/passwd", "nobody:x:65534:65534:nobody:/:/bin/prometheus\n"),
                           ("etc/group", "nogroup:x:65534:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for inside, host in sorted(files.items()):
            info = tar.gettarinfo(host, arcname=inside.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(host, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def ensure_image(api: Any, binary: str) -> str:
    """The local Prometheus image for this host's binary: built once, never pulled."""
    files = _files(binary)
    digest = content_hash(files)
    ref = f"{IMAGE_REPO}:debian-{digest}"
    if api.image_present(ref) and api.image_labels(ref).get(LABEL) == digest:
        return ref
    api.import_image(rootfs_tar(files), ref,
                     [f"LABEL {LABEL}={digest}", 'ENTRYPOINT ["/bin/prometheus"]',
                      "WORKDIR /tmp"])
    return ref


def container_name(name: str) -> str:
    return f"tfso-monitor-{name}"


def start(api: Any, name: str, image: str, args: list[str], folder: Path) -> str:
    """Create and start NAME's Prometheus container (a stale one of that name is removed)."""
    from orchestrator.runtime.docker.api import ContainerRequest, Mount

    for old in api.list({MONITOR_LABEL: name}):
        api.remove(old.id)
    request = ContainerRequest(
        image=image, command=tuple(args), name=container_name(name),
        labels={MONITOR_LABEL: name}, mounts=(Mount(str(folder), str(folder), read_only=False),),
        restart="unless-stopped", network_mode="host", user=f"{os.getuid()}:{os.getgid()}")
    cid = api.create(request)
    api.start(cid, name=request.name)
    return cid


def running(api: Any, cid: str) -> bool:
    try:
        return bool(api.inspect(cid).running)
    except Exception:  # gone
        return False


def logs(api: Any, cid: str) -> str:
    try:
        return str(api.logs(cid, tail=20))
    except Exception:
        return ""


def remove(api: Any, cid: str) -> None:
    try:
        api.stop(cid, timeout_s=10)
    except Exception:  # already stopped or gone
        pass
    try:
        api.remove(cid)
    except Exception:
        pass


def docker_api() -> Any:
    from orchestrator.runtime.docker.api import DockerApi, DockerError

    try:
        return DockerApi()
    except DockerError as exc:
        raise MonitorError(f"cannot reach Docker to run Prometheus as a container: {exc}",
                           fix="start dockerd (or set DOCKER_HOST)") from exc
