"""The one module that imports the Docker SDK: plain requests in, plain data out.

Each method maps to one Engine endpoint (docker-py's low-level `APIClient`) and returns our own
frozen dataclasses, so the runtime above never sees an SDK object. Every SDK, HTTP or socket
error becomes one of our errors in ONE function, `translate_error`, chained with `from`:

    RuntimeFailure
     └── DockerError            Docker refused or failed an operation (message from the Engine)
          ├── DockerUnavailable no daemon answers, or the socket is not ours to use
          ├── ImageMissing      the image is not present and the pull policy forbids a pull
          ├── PortBusy          a host port is already allocated
          ├── MountMissing      a bind-mount source does not exist on the host
          └── GpuUnavailable    the engine cannot give GPUs to containers

`docker` itself is imported lazily (inside `DockerApi`), so `tfsctl --help`, the compose writer
and the unit tests of the request builder need no daemon and import fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from orchestrator.errors import RuntimeFailure

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
API_TIMEOUT_S = 60.0
PING_TIMEOUT_S = 3.0
# The Engine API version the request builder targets (Docker 20.10 speaks 1.41); the live client
# negotiates its own, this one only shapes requests built without a daemon (tests, compose).
BUILD_API_VERSION = "1.41"


# ---------------------------------------------------------------------------------------------
# Errors


class DockerError(RuntimeFailure):
    """Docker refused or failed an operation; the message carries the Engine's own words."""


class DockerUnavailable(DockerError):
    """No Docker daemon answers, or its socket may not be used by this user."""


class ImageMissing(DockerError):
    def __init__(self, image: str, *, why: str = "") -> None:
        self.image = image
        super().__init__(
            f"image {image} is not present in the local Docker engine"
            + (f" ({why})" if why else ""),
            fix=f"get it with `docker pull {image}` (or `docker load -i FILE.tar` offline), "
            "or set `pull: missing` in the spec to let deploy pull it; `--image REPO:TAG` "
            "chooses another image",
        )


class PortBusy(DockerError):
    pass


class MountMissing(DockerError):
    pass


class GpuUnavailable(DockerError):
    pass


GPU_FIX = (
    "install the NVIDIA driver and the NVIDIA Container Toolkit (package nvidia-container-toolkit), "
    "run `nvidia-ctk runtime configure --runtime=docker` and restart dockerd; check with "
    "`docker run --rm --gpus all ubuntu nvidia-smi`. Or deploy on CPU: `device: cpu` in the spec"
)


def translate_error(exc: BaseException, doing: str, *, image: str | None = None,
                    endpoint: str = DEFAULT_SOCKET) -> DockerError:
    """The one place where SDK, HTTP and socket errors become ours (raise the result `from exc`)."""
    import requests

    try:
        import docker.errors as derr
    except ImportError:  # pragma: no cover - the [serve] extra is missing
        derr = None  # type: ignore[assignment]
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc)
    low = text.lower()
    if (derr is not None and isinstance(exc, derr.ImageNotFound)) or (
        image and ("no such image" in low or ("not found" in low and image in text))
    ):
        return ImageMissing(image or "?", why=text)
    if ("permission denied" in low and ("docker.sock" in low or "connect" in low)) or isinstance(exc, PermissionError):
        return DockerUnavailable(
            f"cannot {doing}: permission denied on the Docker socket ({endpoint})",
            fix="run as root, or add your user to the docker group (`sudo usermod -aG docker "
            "$USER`, then log in again)",
        )
    connection_words = ("connection refused", "no such file or directory", "connection aborted",
                        "failed to establish", "error while fetching server api version",
                        "max retries exceeded")
    if isinstance(exc, (requests.ConnectionError, FileNotFoundError, ConnectionError)) or (
        not explanation and any(w in low for w in connection_words)
    ):
        return DockerUnavailable(
            f"cannot {doing}: no Docker daemon answers at {endpoint} ({_short(text)})",
            fix="start Docker (`sudo systemctl start docker`, or `bash scripts/setup_system.sh`), "
            "set DOCKER_HOST if it listens elsewhere, or use `--runtime local`",
        )
    if isinstance(exc, requests.Timeout):
        return DockerError(
            f"cannot {doing}: the Docker daemon did not answer in time ({_short(text)})",
            fix="check that dockerd is healthy (`docker info`), then try again",
        )
    if "could not select device driver" in low or ("gpu" in low and "capabilit" in low):
        return GpuUnavailable(
            f"cannot {doing}: this Docker engine has no GPU runtime ({text})", fix=GPU_FIX
        )
    if "port is already allocated" in low or "address already in use" in low:
        return PortBusy(
            f"cannot {doing}: a host port is already in use ({text})",
            fix="stop whatever holds it (`ss -ltnp`, `docker ps`), or set other ports in the spec "
            "(`ports: {grpc: 9500, rest: 9501}`)",
        )
    if "bind source path does not exist" in low or "mount source path" in low:
        return MountMissing(
            f"cannot {doing}: a folder to mount is missing on the host ({text})",
            fix="check base_path in the spec; the folder must exist on the "
            "machine that runs dockerd",
        )
    status = getattr(exc, "status_code", None)
    return DockerError(
        f"cannot {doing}: Docker answered {status or type(exc).__name__}: {text}",
        fix="see `docker info` and the daemon's log; `tfsctl ps NAME` lists our containers",
    )


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Plain data


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerRequest:
    """Everything one replica container is created from (what `docker run` would be given)."""

    image: str
    command: tuple[str, ...]
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[int, tuple[str, int]] = field(default_factory=dict)  # inside -> (host ip, host port)
    mounts: tuple[Mount, ...] = ()
    restart: str = "unless-stopped"
    nano_cpus: int | None = None
    mem_limit: str | None = None
    gpus: int | Literal["all"] | None = None  # a device request for GPUs, None: none
    init: bool = True
    user: str | None = None  # "uid:gid"; None: the image's own user
    network_mode: str | None = None  # "host" for the router; None: the default bridge

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ports"] = {str(k): list(v) for k, v in self.ports.items()}
        for optional in ("user", "network_mode"):  # absent when unset: old hashes stay valid
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerRequest:
        values = dict(data)
        values["command"] = tuple(values["command"])
        values["mounts"] = tuple(Mount(**m) for m in values["mounts"])
        values["ports"] = {int(k): (v[0], int(v[1])) for k, v in values["ports"].items()}
        return cls(**values)


@dataclass(frozen=True)
class ContainerInfo:
    """What the Engine says about one container (from inspect or list)."""

    id: str
    name: str
    image: str
    labels: Mapping[str, str]
    status: str  # created | running | restarting | paused | exited | dead | removing
    exit_code: int = 0
    restart_count: int = 0
    started_at: str = ""
    oom_killed: bool = False
    error: str = ""
    ports: Mapping[int, tuple[str, int]] = field(default_factory=dict)
    pid: int = 0  # the container's main process on the host (0 when not running)

    @property
    def running(self) -> bool:
        return self.status == "running"

    def describe(self) -> str:
        if self.status in ("exited", "dead"):
            text = f"exited with code {self.exit_code}"
            if self.oom_killed:
                text += " (killed: out of memory)"
            if self.error:
                text += f": {self.error}"
            return text
        return self.status


def _restart_policy(restart: str) -> dict[str, Any]:
    name, _, count = restart.partition(":")
    policy: dict[str, Any] = {"Name": "" if name == "no" else name}
    if count:
        policy["MaximumRetryCount"] = int(count)
    return policy


def device_requests(gpus: int | str | None) -> list[dict[str, Any]]:
    """Docker's `--gpus all|N`: a device request with the `gpu` capability (Count -1 = all)."""
    if gpus is None:
        return []
    return [{"Driver": "", "Count": -1 if gpus == "all" else int(gpus), "DeviceIDs": None,
             "Capabilities": [["gpu"]], "Options": {}}]


def create_body(request: ContainerRequest) -> dict[str, Any]:
    """The exact JSON body of `POST /containers/create` for a request (pure; tests assert on it)."""
    host_config: dict[str, Any] = {
        "Binds": None,
        "Mounts": [{"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
                   for m in request.mounts],
        "PortBindings": {f"{inside}/tcp": [{"HostIp": ip, "HostPort": str(port)}]
                         for inside, (ip, port) in sorted(request.ports.items())},
        "RestartPolicy": _restart_policy(request.restart),
        "Init": request.init,
        # Unprivileged by default: TF Serving reads its mounts and listens above 1024, nothing more.
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
    }
    if request.nano_cpus:
        host_config["NanoCpus"] = request.nano_cpus
    if request.mem_limit:
        host_config["Memory"] = _bytes(request.mem_limit)
    if request.gpus is not None:
        host_config["DeviceRequests"] = device_requests(request.gpus)
    if request.network_mode:
        host_config["NetworkMode"] = request.network_mode
    body: dict[str, Any] = {
        "Image": request.image,
        "Cmd": list(request.command),
        "Env": [f"{k}={v}" for k, v in sorted(request.environment.items())],
        "Labels": dict(sorted(request.labels.items())),
        "ExposedPorts": {f"{inside}/tcp": {} for inside in sorted(request.ports)},
        "HostConfig": host_config,
    }
    if request.user:
        body["User"] = request.user
    return body


def _bytes(size: str) -> int:
    units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    size = size.strip().lower()
    if size[-1] in units:
        return int(size[:-1]) * units[size[-1]]
    return int(size)


def _info_from_inspect(data: Mapping[str, Any]) -> ContainerInfo:
    state = data.get("State") or {}
    config = data.get("Config") or {}
    bindings = (data.get("HostConfig") or {}).get("PortBindings") or {}
    ports = {}
    for key, binds in bindings.items():
        if binds:
            ports[int(key.split("/")[0])] = (binds[0].get("HostIp", ""), int(binds[0].get("HostPort") or 0))
    return ContainerInfo(
        id=data["Id"],
        name=str(data.get("Name", "")).lstrip("/"),
        image=config.get("Image", ""),
        labels=config.get("Labels") or {},
        status=state.get("Status", "unknown"),
        exit_code=int(state.get("ExitCode") or 0),
        restart_count=int(data.get("RestartCount") or 0),
        started_at=state.get("StartedAt", ""),
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error") or "",
        ports=ports,
        pid=int(state.get("Pid") or 0),
    )


# ---------------------------------------------------------------------------------------------
# The client


class DockerApi:
    """A thin, typed layer over docker-py's `APIClient`; every call translates errors once."""

    def __init__(self, base_url: str | None = None, *, timeout_s: float = API_TIMEOUT_S) -> None:
        self.endpoint = base_url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        try:
            import docker
            from docker.utils import kwargs_from_env

            kwargs = kwargs_from_env()
            if base_url:
                kwargs["base_url"] = base_url
            self._client = docker.APIClient(version="auto", timeout=timeout_s, **kwargs)
        except ImportError as exc:
            raise DockerUnavailable(
                "the Docker SDK is not installed", fix="pip install 'tfserving-orchestrator[serve]'"
            ) from exc
        except Exception as exc:
            raise translate_error(exc, "connect to Docker", endpoint=self.endpoint) from exc

    def _call(self, doing: str, fn: Any, *args: Any, image: str | None = None, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise translate_error(exc, doing, image=image, endpoint=self.endpoint) from exc

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> DockerApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- engine ----------------------------------------------------------------------------

    def version(self) -> str:
        return str(self._call("read the Docker version", self._client.version).get("Version", "?"))

    def info(self) -> dict[str, Any]:
        return dict(self._call("read Docker's info", self._client.info))

    # -- images ----------------------------------------------------------------------------

    def image_present(self, ref: str) -> bool:
        try:
            self._client.inspect_image(ref)
        except Exception as exc:
            error = translate_error(exc, f"inspect image {ref}", image=ref, endpoint=self.endpoint)
            if isinstance(error, ImageMissing):
                return False
            raise error from exc
        return True

    def pull(self, ref: str) -> None:
        repo, tag = split_ref(ref)
        doing = f"pull {ref}"
        try:
            for event in self._client.pull(repo, tag=tag, stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    raise DockerError(f"cannot {doing}: {event['error']}",
                                      fix=f"check the name and your registry access (`docker pull {ref}`)")
        except DockerError:
            raise
        except Exception as exc:
            raise translate_error(exc, doing, endpoint=self.endpoint) from exc

    def import_image(self, tar: bytes, ref: str, changes: Sequence[str] = ()) -> None:
        repo, tag = split_ref(ref)
        self._call(f"import image {ref}", self._client.import_image_from_data, tar, repository=repo,
                   tag=tag, changes=list(changes))

    def image_labels(self, ref: str) -> dict[str, str]:
        data = self._call(f"inspect image {ref}", self._client.inspect_image, ref, image=ref)
        return dict((data.get("Config") or {}).get("Labels") or {})

    def tag_image(self, ref: str, new_ref: str) -> None:
        repo, tag = split_ref(new_ref)
        self._call(f"tag {ref} as {new_ref}", self._client.tag, ref, repo, tag=tag, force=True, image=ref)

    def remove_image(self, ref: str) -> None:
        self._call(f"remove image {ref}", self._client.remove_image, ref, force=True, image=ref)

    # -- containers ------------------------------------------------------------------------

    def create(self, request: ContainerRequest) -> str:
        body = create_body(request)
        result = self._call(
            f"create container {request.name or '(unnamed)'} from {request.image}",
            self._client.create_container,
            body["Image"],
            command=body["Cmd"],
            name=request.name or None,
            labels=body["Labels"],
            environment=body["Env"],
            ports=sorted(request.ports),
            host_config=body["HostConfig"],
            user=body.get("User"),
            image=request.image,
        )
        return str(result["Id"])

    def start(self, container: str, *, name: str = "") -> None:
        self._call(f"start container {name or container[:12]}", self._client.start, container)

    def inspect(self, container: str) -> ContainerInfo:
        return _info_from_inspect(self._call(f"inspect container {container[:12]}",
                                             self._client.inspect_container, container))

    def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers (running or not) carrying every label given; inspected for full state."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        listed = self._call("list containers", self._client.containers, all=True, filters=filters)
        result = []
        for item in listed:
            try:
                result.append(self.inspect(item["Id"]))
            except DockerError:
                continue  # removed between list and inspect
        return result

    def logs(self, container: str, *, tail: int = 100) -> str:
        data = self._call(f"read logs of {container[:12]}", self._client.logs, container,
                          stdout=True, stderr=True, tail=tail, timestamps=False)
        return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)

    def stop(self, container: str, *, timeout_s: float = 10.0) -> None:
        self._call(f"stop container {container[:12]}", self._client.stop, container, timeout=int(timeout_s))

    def kill(self, container: str, *, signal: str = "SIGKILL") -> None:
        self._call(f"kill container {container[:12]}", self._client.kill, container, signal=signal)

    def remove(self, container: str) -> None:
        self._call(f"remove container {container[:12]}", self._client.remove_container, container,
                   force=True, v=True)


def split_ref(ref: str) -> tuple[str, str]:
    """`repo[:tag]` -> (repo, tag); a registry port (`host:5000/x`) is not a tag."""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, "latest"
