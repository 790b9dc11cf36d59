"""Where the server's configuration comes from: flags, --model_config_file and the side files.

`--model_config_file` is parsed with TF Serving's own `ModelServerConfig` message (text format);
batching, monitoring and SSL files with our copies of TF Serving's messages
(`orchestrator.protos.config_pb2`), so a file TF Serving accepts is accepted here and vice versa.
"""

from __future__ import annotations

import errno
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2, text_format

from orchestrator import limits
from orchestrator.protos import config_pb2

# logging_config's custom_logging_config carries a Struct ({max_mb}); text format names its type.
_ = struct_pb2.Struct
LABEL_RE = re.compile(r"^[a-zA-Z0-9_]+$")
log = logging.getLogger("tfs.server")


class ConfigError(ValueError):
    """A config file or flag value the server cannot use.

    `code` is the status code TF Serving reports for it ("Failed to start server. Error: CODE: ...").
    """

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.code = code


# TF's errno -> status code mapping for file reads (tsl/platform/errors.cc ErrnoToCode).
_ERRNO_CODE = {
    errno.ENOENT: "NOT_FOUND",
    errno.ENOTDIR: "NOT_FOUND",
    errno.EACCES: "PERMISSION_DENIED",
    errno.EPERM: "PERMISSION_DENIED",
    errno.EISDIR: "FAILED_PRECONDITION",
    errno.ENAMETOOLONG: "INVALID_ARGUMENT",
}
# Our copies of TF Serving's messages live in our own package; errors name TF Serving's.
_UPSTREAM_NAME = {
    "BatchingParameters": "tensorflow.serving.BatchingParameters",
    "MonitoringConfig": "tensorflow.serving.MonitoringConfig",
    "SSLConfig": "tensorflow.serving.SSLConfig",
}


def read_text_proto(path: str, msg: Any) -> Any:
    """Parse a text-format proto file into `msg` the way TF Serving's ParseProtoTextFile does.

    A file that cannot be read is "PATH; STRERROR" with TF's code for the errno. A file that does
    not parse logs protobuf's "Error parsing text-format TYPE: LINE:COL: WHAT" and is
    INVALID_ARGUMENT "Invalid protobuf file: 'PATH'", TF Serving's exact texts.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise ConfigError(f"{path}; {e.strerror}", _ERRNO_CODE.get(e.errno or 0, "UNKNOWN")) from None
    try:
        text_format.Parse(data.decode("utf-8"), msg)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        name = msg.DESCRIPTOR.full_name
        name = _UPSTREAM_NAME.get(msg.DESCRIPTOR.name, name)
        if isinstance(e, text_format.ParseError) and e.GetLine() is not None:
            what = str(e).split(" : ", 1)[-1]
            where = f"{e.GetLine()}:{e.GetColumn()}: {what}"
        else:
            where = str(e)
        log.error("Error parsing text-format %s: %s", name, where)
        raise ConfigError(f"Invalid protobuf file: '{path}'") from None
    return msg


@dataclass(frozen=True)
class VersionPolicy:
    kind: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, found: list[int]) -> set[int]:
        """The versions to serve among those found on disk."""
        if self.kind == "all":
            return set(found)
        if self.kind == "specific":
            return set(self.versions) & set(found)
        return set(sorted(found)[-max(self.num_versions, 1) :])


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: dict[str, int] = field(default_factory=dict)
    logging: Any = None  # payload_log.LogOptions when logging_config asks for payload logging


def single_model(name: str, base_path: str) -> list[ModelConfig]:
    return [ModelConfig(name=name, base_path=base_path)]


def parse_model_server_config(text: str, *, source: str = "<config>") -> list[ModelConfig]:
    """Parse a ModelServerConfig text proto into ModelConfigs; ConfigError on anything invalid."""
    from tensorflow_serving.config import model_server_config_pb2

    msg = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise ConfigError(f"{source}: cannot parse ModelServerConfig: {e}") from e
    return models_from_proto(msg, source=source)


def models_from_bytes(data: bytes, *, source: str) -> list[ModelConfig]:
    """A serialized ModelServerConfig (any wire-compatible copy, e.g. a ReloadConfigRequest's)."""
    from google.protobuf.message import DecodeError
    from tensorflow_serving.config import model_server_config_pb2

    msg = model_server_config_pb2.ModelServerConfig()
    try:
        msg.ParseFromString(data)
    except DecodeError as e:
        raise ConfigError(f"{source}: cannot parse ModelServerConfig: {e}") from e
    return models_from_proto(msg, source=source)


def models_from_proto(msg, *, source: str) -> list[ModelConfig]:  # type: ignore[no-untyped-def]
    if msg.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{source}: custom_model_config is not supported")
    out: list[ModelConfig] = []
    seen: set[str] = set()
    for c in msg.model_config_list.config:
        if not c.name:
            raise ConfigError(f"{source}: a model config has no name")
        _check_length(source, "model name", c.name)
        if c.name in seen:
            raise ConfigError(
                f"{source}: Illegal to list model {c.name} multiple times in config list"
            )
        seen.add(c.name)
        if not c.base_path:
            raise ConfigError(f"{source}: model {c.name} has no base_path")
        if c.model_platform and c.model_platform != "tensorflow":
            raise ConfigError(
                f"{source}: model {c.name}: model_platform {c.model_platform!r} is not supported"
            )
        payload = None
        if c.HasField("logging_config"):
            from orchestrator.server.payload_log import options_from_proto

            payload = options_from_proto(c.name, c.logging_config, source=source)
        out.append(
            ModelConfig(
                name=c.name,
                base_path=c.base_path,
                policy=_policy(c.model_version_policy),
                labels=_labels(c.name, dict(c.version_labels), source),
                logging=payload,
            )
        )
    return out


def _check_length(source: str, what: str, value: str) -> None:
    most = limits.current().max_name_length
    if len(value) > most:
        raise ConfigError(
            f"{source}: {what} {value[:40]!r}... has {len(value)} characters; at most {most} are "
            "accepted (TFS_MAX_NAME_LENGTH)"
        )


def _policy(p) -> VersionPolicy:  # type: ignore[no-untyped-def]
    which = p.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        return VersionPolicy("specific", versions=tuple(sorted(p.specific.versions)))
    if which == "latest":
        return VersionPolicy("latest", num_versions=p.latest.num_versions or 1)
    return VersionPolicy()


def _labels(model: str, labels: dict[str, int], source: str) -> dict[str, int]:
    for label in labels:
        _check_length(source, f"model {model}: label", label)
        if not LABEL_RE.match(label):
            raise ConfigError(
                f"{source}: model {model}: Invalid label: {label!r}; "
                "labels may only contain letters, digits and underscores"
            )
    return labels


def read_model_config_file(path: str) -> list[ModelConfig]:
    from tensorflow_serving.config import model_server_config_pb2

    msg = read_text_proto(path, model_server_config_pb2.ModelServerConfig())
    return models_from_proto(msg, source=path)


@dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters with TF Serving's defaults for unset fields."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False


def read_batching_parameters(path: str, *, cpus: int) -> BatchingOptions:
    if not path:
        return BatchingOptions(num_batch_threads=max(cpus, 1))
    msg = read_text_proto(path, config_pb2.BatchingParameters())

    def get(name: str, default: int) -> int:
        return getattr(msg, name).value if msg.HasField(name) else default

    opts = BatchingOptions(
        max_batch_size=get("max_batch_size", 1000),
        batch_timeout_micros=get("batch_timeout_micros", 0),
        max_enqueued_batches=get("max_enqueued_batches", 10),
        num_batch_threads=get("num_batch_threads", max(cpus, 1)),
        allowed_batch_sizes=tuple(msg.allowed_batch_sizes),
        pad_variable_length_inputs=msg.pad_variable_length_inputs,
    )
    if opts.max_batch_size <= 0:
        raise ConfigError(f"{path}: max_batch_size must be positive")
    if opts.allowed_batch_sizes:
        sizes = list(opts.allowed_batch_sizes)
        if sizes != sorted(set(sizes)):
            raise ConfigError(f"{path}: allowed_batch_sizes must be increasing")
        if sizes[-1] != opts.max_batch_size:
            raise ConfigError(
                f"{path}: the last entry in allowed_batch_sizes must equal max_batch_size"
            )
    return opts


@dataclass(frozen=True)
class MonitoringOptions:
    enable: bool = False
    path: str = "/monitoring/prometheus/metrics"


def read_monitoring_config(path: str) -> MonitoringOptions:
    if not path:
        return MonitoringOptions()
    msg = read_text_proto(path, config_pb2.MonitoringConfig())
    p = msg.prometheus_config
    return MonitoringOptions(enable=p.enable, path=p.path or "/monitoring/prometheus/metrics")


def read_ssl_config(path: str) -> config_pb2.SSLConfig | None:
    if not path:
        return None
    return read_text_proto(path, config_pb2.SSLConfig())
