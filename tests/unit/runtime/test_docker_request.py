"""The exact container requests the Docker runtime sends, built without a daemon.

No Docker here: these pin the JSON body of `POST /containers/create` for CPU and GPU specs, the
labels, mounts and limits, and how Docker's errors are translated into ours.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.runtime.docker.api import (
    ContainerRequest,
    DockerError,
    DockerUnavailable,
    GpuUnavailable,
    ImageMissing,
    Mount,
    MountMissing,
    PortBusy,
    create_body,
    split_ref,
    translate_error,
)
from orchestrator.runtime.docker.templates import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    LABEL_REPLICA,
    LABEL_SPEC_HASH,
    container_template,
    effective_specs,
    replica_request,
    template_hash,
)
from orchestrator.spec import parse_spec


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "models" / "m" / "1").mkdir(parents=True)
    (tmp_path / "serving_configs").mkdir()
    return tmp_path


def spec(tree: Path, text: str = ""):
    path = tree / "serving_configs" / "m.yaml"
    path.write_text("base_path: ../models/m\n" + text)
    return parse_spec(path.read_text(), file=path)


def body_for(tree: Path, text: str = "", *, index: int = 0, ports: tuple[int, int] = (9000, 9001),
             host_mounts: tuple[Mount, ...] = ()):
    specs = effective_specs([spec(tree, text)])
    template = container_template(specs, tree / "state" / "config", host_mounts=host_mounts)
    request = replica_request(template, name=f"tfso-m-{index}-abc", index=index, host="127.0.0.1",
                              grpc_port=ports[0], rest_port=ports[1],
                              spec_hash=template_hash(template, specs[0]))
    return request, create_body(request)


def test_cpu_request(tree: Path) -> None:
    _, body = body_for(tree, "resources: {cpus: 1.5, memory: 512m}\nversion_labels: {stable: 1}\n")
    assert body["Image"] == "tensorflow/serving:2.19.0"
    assert body["Cmd"][:3] == ["--port=8500", "--rest_api_port=8501",
                               "--model_config_file=/config/models.config"]
    assert body["Env"] == ["MODEL_NAME=m"]
    labels = body["Labels"]
    assert labels[LABEL_MANAGED_BY] == "tfsctl" and labels[LABEL_DEPLOYMENT] == "m"
    assert labels[LABEL_REPLICA] == "0" and len(labels[LABEL_SPEC_HASH]) == 16
    assert body["ExposedPorts"] == {"8500/tcp": {}, "8501/tcp": {}}
    host = body["HostConfig"]
    assert host["PortBindings"] == {"8500/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9000"}],
                                    "8501/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9001"}]}
    assert host["Mounts"] == [
        {"Type": "bind", "Source": str(tree / "models" / "m"), "Target": "/models/m", "ReadOnly": True},
        {"Type": "bind", "Source": str(tree / "state" / "config"), "Target": "/config", "ReadOnly": True},
    ]
    assert host["RestartPolicy"] == {"Name": "unless-stopped"}
    assert host["NanoCpus"] == 1_500_000_000 and host["Memory"] == 512 * 1024**2
    assert host["Init"] is True
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges:true"], "unprivileged"
    assert "DeviceRequests" not in host
    assert not any(a.startswith("--per_process_gpu_memory_fraction") for a in body["Cmd"])


def test_gpu_request_all_gpus_and_a_shared_memory_fraction(tree: Path) -> None:
    """GPU is only simulated here (no GPU, no daemon): the request is what Docker would get."""
    _, body = body_for(tree, "device: gpu\nreplicas: 2\n")
    assert body["Image"] == "tensorflow/serving:2.19.0-gpu"
    assert body["HostConfig"]["DeviceRequests"] == [
        {"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}
    ]
    # Two replicas share the GPUs: each may take 0.45 of their memory.
    assert "--per_process_gpu_memory_fraction=0.45" in body["Cmd"]


def test_gpu_request_with_a_count_and_the_spec_fraction(tree: Path) -> None:
    _, body = body_for(tree, "device: gpu\ngpu: {count: 1, memory_fraction: 0.3}\nreplicas: 3\n"
                             "tag: 2.18.0\nimage: registry.local:5000/tfs\n")
    assert body["Image"] == "registry.local:5000/tfs:2.18.0-gpu"
    assert body["HostConfig"]["DeviceRequests"][0]["Count"] == 1
    assert [a for a in body["Cmd"] if "fraction" in a] == ["--per_process_gpu_memory_fraction=0.3"]


def test_one_gpu_replica_takes_what_tf_takes(tree: Path) -> None:
    _, body = body_for(tree, "device: gpu\n")
    assert not any("fraction" in a for a in body["Cmd"])


def test_restart_policy_and_extra_mounts(tree: Path) -> None:
    _, body = body_for(tree, "restart: on-failure:3\n", host_mounts=(Mount("/opt", "/opt"),))
    host = body["HostConfig"]
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host["Mounts"][-1] == {"Type": "bind", "Source": "/opt", "Target": "/opt", "ReadOnly": True}
    _, no = body_for(tree, "restart: 'no'\n")
    assert no["HostConfig"]["RestartPolicy"] == {"Name": ""}


def test_hash_ignores_labels_and_versions_but_not_the_image(tree: Path) -> None:
    def hashed(text: str) -> str:
        specs = [spec(tree, text)]
        return template_hash(container_template(specs, "/cfg"), specs[0])

    base = hashed("")
    assert hashed("version_labels: {stable: 1}\n") == base  # a hot reload, not a new container
    assert hashed("version_policy: all\n") == base
    assert hashed("tag: 2.18.0\n") != base
    assert hashed("resources: {memory: 1g}\n") != base
    assert hashed("ports: {grpc: 9100, rest: 9101}\n") != base
    assert hashed("replicas: 3\n") == base  # scaling adds or removes, never replaces


def test_request_round_trips_through_json(tree: Path) -> None:
    request, _ = body_for(tree, "device: gpu\ngpu: {count: 2}\n")
    assert ContainerRequest.from_json(request.to_json()) == request


@pytest.mark.parametrize(("ref", "expected"), [
    ("tensorflow/serving:2.19.0", ("tensorflow/serving", "2.19.0")),
    ("tensorflow/serving", ("tensorflow/serving", "latest")),
    ("localhost:5000/tfs", ("localhost:5000/tfs", "latest")),
    ("localhost:5000/tfs:x-gpu", ("localhost:5000/tfs", "x-gpu")),
])
def test_split_ref(ref: str, expected: tuple[str, str]) -> None:
    assert split_ref(ref) == expected


def _api_error(explanation: str, status: int = 500):
    import docker.errors
    import requests

    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("500 Server Error", response=response, explanation=explanation)


def test_errors_are_translated_once() -> None:
    import docker.errors
    import requests

    missing = translate_error(docker.errors.ImageNotFound("No such image: x/y:1"), "create", image="x/y:1")
    assert isinstance(missing, ImageMissing) and "x/y:1" in str(missing) and "docker pull x/y:1" in str(missing)
    gpu = translate_error(_api_error('could not select device driver "" with capabilities: [[gpu]]'), "start")
    assert isinstance(gpu, GpuUnavailable) and "nvidia-container-toolkit" in str(gpu)
    busy = translate_error(_api_error("driver failed programming external connectivity: Bind for "
                                      "127.0.0.1:9001 failed: port is already allocated"), "start")
    assert isinstance(busy, PortBusy) and "127.0.0.1:9001" in str(busy)
    mount = translate_error(_api_error('invalid mount config for type "bind": bind source path does '
                                       "not exist: /nope", 400), "create")
    assert isinstance(mount, MountMissing) and "/nope" in str(mount)
    down = translate_error(requests.ConnectionError("('Connection aborted.', FileNotFoundError(2, "
                                                    "'No such file or directory'))"), "list containers")
    assert isinstance(down, DockerUnavailable) and "systemctl start docker" in str(down)
    denied = translate_error(docker.errors.DockerException(
        "Error while fetching server API version: ('Connection aborted.', PermissionError(13, "
        "'Permission denied'))"), "connect to Docker")
    assert isinstance(denied, DockerUnavailable) and "docker group" in str(denied)
    other = translate_error(_api_error("something odd", 500), "start container c")
    assert type(other) is DockerError and "500" in str(other) and "something odd" in str(other)


def test_free_ports_come_from_below_the_ephemeral_range() -> None:
    """A port the kernel hands out for bind(0) can go to another process's outgoing connection
    before our server binds it; below ip_local_port_range no outgoing connection takes it."""
    import socket

    from orchestrator.runtime import base

    low = base._ephemeral_low()
    if low - base._LOWEST < 1024:
        pytest.skip(f"ip_local_port_range starts at {low}: no room below it, bind(0) is used")
    ports = {base.free_port() for _ in range(20)}
    assert all(base._LOWEST <= p < low for p in ports), ports
    # Nothing listens on them yet, and still the next ones differ: a spec's grpc, rest and
    # metrics ports come from calls in a row (two drew the same port once in a full run).
    many = [base.free_port() for _ in range(base._handed.maxlen or 0)]
    assert len(set(many)) == len(many)
    for port in ports:  # each one really is free
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
