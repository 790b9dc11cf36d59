"""Plans: pure functions from Specs to the files and flags `tensorflow_model_server` reads.

The same Plan drives every runtime; only where files and models live differs (a host folder
for the local runtime, `/config` and `/models/<name>` inside a container). No I/O happens
here, so every generated file is checked by golden tests and parsed back with the real protos.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf import text_format
from google.protobuf.wrappers_pb2 import Int64Value
from tensorflow_serving.config import model_server_config_pb2 as msc_pb2

from orchestrator.errors import SpecError
from orchestrator.protos import config_pb2
from orchestrator.spec import Spec

MODELS_CONFIG = "models.config"
BATCHING_CONFIG = "batching_parameters.txt"
MONITORING_CONFIG = "monitoring.config"

ModelPath = Callable[[Spec], str]


def host_model_path(spec: Spec) -> str:
    return str(spec.base_path)


def container_model_path(spec: Spec) -> str:
    """Where the Docker runtime mounts a model: the official image's MODEL_BASE_PATH layout."""
    return f"/models/{spec.name}"


ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"  # TensorFlow's switch for its oneDNN CPU kernels


def server_env(spec: Spec) -> dict[str, str]:
    """What the server's environment holds on top (every runtime passes it; TensorFlow reads it
    when it loads)."""
    return {} if spec.onednn is None else {ONEDNN_ENV: "1" if spec.onednn else "0"}


@dataclass(frozen=True)
class Plan:
    """Everything one TF Serving process needs: its config files and its exact flags."""

    files: Mapping[str, str]
    args: tuple[str, ...]
    grpc_port: int
    rest_port: int
    models: tuple[str, ...] = field(default=())
    env: Mapping[str, str] = field(default_factory=dict)  # the server's environment on top


def model_config(
    spec: Spec,
    model_path: ModelPath = host_model_path,
    *,
    versions: Sequence[int] | None = None,
    labels: Mapping[str, int] | None = None,
) -> msc_pb2.ModelConfig:
    """One ModelConfig; `versions`/`labels` override the spec (used by label moves and rollouts)."""
    config = msc_pb2.ModelConfig(
        name=spec.name, base_path=model_path(spec), model_platform="tensorflow"
    )
    policy = config.model_version_policy
    if versions is not None:
        policy.specific.versions.extend(sorted(set(versions)))
    elif spec.version_policy.kind == "latest":
        policy.latest.num_versions = spec.version_policy.num_versions
    elif spec.version_policy.kind == "all":
        policy.all.SetInParent()
    else:
        policy.specific.versions.extend(sorted(spec.version_policy.versions))
    for label, version in sorted((spec.version_labels if labels is None else labels).items()):
        config.version_labels[label] = version
    if spec.logging is not None:
        _logging_config(config, spec)
    return config


def _logging_config(config: msc_pb2.ModelConfig, spec: Spec) -> None:
    """TF Serving's own `logging_config`; the size cap rides in `custom_logging_config`.

    LogCollectorConfig has no size field, so `max_mb` is a google.protobuf.Struct in the Any
    that upstream reserves for the logger's own settings (our server reads it; others ignore it).
    """
    from google.protobuf.struct_pb2 import Struct

    assert spec.logging is not None
    lc = config.logging_config
    lc.sampling_config.sampling_rate = spec.logging.sample
    lc.log_collector_config.type = "tfrecord"
    lc.log_collector_config.filename_prefix = f"{spec.logging.path}/{spec.name}"
    extra = Struct()
    extra.update({"max_mb": spec.logging.max_mb})
    lc.custom_logging_config.Pack(extra)


def models_config_text(configs: Sequence[msc_pb2.ModelConfig]) -> str:
    names = [c.name for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(
            f"model(s) {duplicates} appear twice in one server",
            field="name",
            fix="give every model in a server its own name",
        )
    server_config = msc_pb2.ModelServerConfig()
    server_config.model_config_list.config.extend(configs)
    return text_format.MessageToString(server_config)


def batching_text(spec: Spec) -> str:
    """BatchingParameters text proto; wrapper fields, so `max_batch_size { value: 32 }`."""
    b = spec.batching
    params = config_pb2.BatchingParameters(
        max_batch_size=Int64Value(value=b.max_batch_size),
        batch_timeout_micros=Int64Value(value=b.batch_timeout_micros),
        max_enqueued_batches=Int64Value(value=b.max_enqueued_batches),
        num_batch_threads=Int64Value(value=b.num_batch_threads),
        allowed_batch_sizes=list(b.allowed_batch_sizes),
        pad_variable_length_inputs=b.pad_variable_length_inputs,
    )
    return text_format.MessageToString(params)


def monitoring_text(spec: Spec) -> str:
    config = config_pb2.MonitoringConfig(
        prometheus_config=config_pb2.PrometheusConfig(enable=True, path=spec.monitoring.path)
    )
    return text_format.MessageToString(config)


def _server_settings(specs: Sequence[Spec]) -> Spec:
    """Server-wide settings come from the first spec; the others must agree or not care."""
    first = specs[0]
    for other in specs[1:]:
        for attr in ("batching", "monitoring", "threads", "onednn", "workers", "device", "gpu",
                     "prefer_tflite_model"):
            if getattr(other, attr) != getattr(first, attr):
                raise SpecError(
                    f"{attr} differs between {first.name} and {other.name}, "
                    "but one server has one setting",
                    file=str(other.source) if other.source else None,
                    field=attr,
                    fix=f"use the same {attr} in every spec served together, or serve them apart",
                )
    return first


def build_plan(
    specs: Sequence[Spec],
    *,
    config_dir: str,
    model_path: ModelPath = host_model_path,
    grpc_port: int | None = None,
    rest_port: int | None = None,
    model_configs: Sequence[msc_pb2.ModelConfig] | None = None,
) -> Plan:
    """Files and flags for one server holding every model in `specs`.

    `config_dir` is where the runtime will put the files as the server sees them; ports
    default to the first spec's (a container passes 8500/8501, its own inside ports).
    """
    if not specs:
        raise SpecError("no model to serve", fix="pass at least one spec")
    main = _server_settings(specs)
    grpc = main.ports.grpc if grpc_port is None else grpc_port
    rest = main.ports.rest if rest_port is None else rest_port
    configs = model_configs if model_configs is not None else [model_config(s, model_path) for s in specs]
    files = {MODELS_CONFIG: models_config_text(configs)}
    args = [
        f"--port={grpc}",
        f"--rest_api_port={rest}",
        f"--model_config_file={config_dir}/{MODELS_CONFIG}",
        f"--file_system_poll_wait_seconds={main.file_system_poll_wait_seconds}",
        f"--rest_api_timeout_in_ms={main.rest_api_timeout_ms}",
        f"--enable_model_warmup={'true' if main.enable_model_warmup else 'false'}",
    ]
    if main.batching.enabled:
        files[BATCHING_CONFIG] = batching_text(main)
        args += ["--enable_batching=true", f"--batching_parameters_file={config_dir}/{BATCHING_CONFIG}"]
    if main.monitoring.prometheus:
        files[MONITORING_CONFIG] = monitoring_text(main)
        args.append(f"--monitoring_config_file={config_dir}/{MONITORING_CONFIG}")
    if main.workers is not None:
        args.append(f"--rest_api_num_threads={main.workers}")
    if main.threads.intra_op:
        args.append(f"--tensorflow_intra_op_parallelism={main.threads.intra_op}")
    if main.threads.inter_op:
        args.append(f"--tensorflow_inter_op_parallelism={main.threads.inter_op}")
    if main.prefer_tflite_model:
        args.append("--prefer_tflite_model=true")
    if main.device == "gpu" and main.gpu.memory_fraction:
        args.append(f"--per_process_gpu_memory_fraction={main.gpu.memory_fraction}")
    return Plan(
        files=files,
        args=tuple(args),
        grpc_port=grpc,
        rest_port=rest,
        models=tuple(s.name for s in specs),
        env=server_env(main),
    )


# ---------------------------------------------------------------------------------------------
# Label moves: TF Serving may label only an AVAILABLE version, and a reload replaces all.


@dataclass(frozen=True)
class ReloadStep:
    """One whole-config reload, applied only after `wait_available` versions are AVAILABLE;
    `then_available` must be AVAILABLE after it before anything else happens."""

    description: str
    models_config: str
    wait_available: Mapping[str, tuple[int, ...]]
    then_available: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


def plan_label_move(
    specs: Sequence[Spec],
    model: str,
    label: str,
    to_version: int,
    *,
    current_versions: Sequence[int],
    model_path: ModelPath = host_model_path,
) -> list[ReloadStep]:
    """The TF Serving-safe sequence to point `label` of `model` at `to_version`.

    1. load {current versions} ∪ {to_version}, labels unchanged (every model kept: reloads
       replace the whole config); 2. once `to_version` is AVAILABLE, move the label.
    """
    return plan_label_moves(specs, model, {label: to_version}, to_version,
                            current_versions=current_versions, model_path=model_path)


def plan_label_moves(
    specs: Sequence[Spec],
    model: str,
    moves: Mapping[str, int],
    to_version: int,
    *,
    current_versions: Sequence[int],
    model_path: ModelPath = host_model_path,
) -> list[ReloadStep]:
    """`plan_label_move` for several labels at once (none: only load `to_version` beside)."""
    from orchestrator.names import NAME_PATTERN

    for label in moves:
        if not NAME_PATTERN.fullmatch(label):
            raise SpecError(f"label {label!r} is not valid", fix="labels match [A-Za-z0-9_]+")
    by_name = {s.name: s for s in specs}
    if model not in by_name:
        raise SpecError(f"model {model!r} is not in this server ({sorted(by_name)})")
    target = by_name[model]
    versions = sorted(set(current_versions) | {to_version})
    new_labels = {**target.version_labels, **moves}
    ready = {model: (to_version,)}

    def config_with(labels: Mapping[str, int]) -> str:
        return models_config_text(
            [
                model_config(s, model_path, versions=versions, labels=labels)
                if s.name == model
                else model_config(s, model_path)
                for s in specs
            ]
        )

    steps = [
        ReloadStep(
            f"load version {to_version} of {model} beside {list(current_versions)}",
            config_with(target.version_labels),
            wait_available={},
            then_available=ready,
        )
    ]
    if moves:
        steps.append(ReloadStep(
            f"point label(s) {', '.join(repr(k) for k in moves)} of {model} at version {to_version}",
            config_with(new_labels),
            wait_available=ready,
            then_available=ready,
        ))
    return steps


def plan_safe_reload(specs: Sequence[Spec], available: Mapping[str, Collection[int]],
                     wanted: Mapping[str, Sequence[int]], *, model_path: ModelPath = host_model_path,
                     final: str | None = None) -> list[ReloadStep]:
    """A new config (`final`, default the specs') whose labels may name versions not loaded yet:
    first without those labels, then, once every wanted version is AVAILABLE, as written
    (TF Serving labels only AVAILABLE versions)."""
    ready = {m: tuple(v) for m, v in wanted.items()}
    if final is None:
        final = models_config_text([model_config(s, model_path) for s in specs])
    first = models_config_text([
        model_config(s, model_path, labels={label: v for label, v in s.version_labels.items()
                                            if v in available.get(s.name, ())})
        for s in specs])
    if first == final:
        return [ReloadStep("the config as written", final, {}, ready)]
    return [ReloadStep("load new versions, labels on AVAILABLE ones only", first, {}, ready),
            ReloadStep("the config as written", final, ready, ready)]


def plan_label_drop(specs: Sequence[Spec], model: str, label: str, *, current_versions: Sequence[int],
                    keep_versions: Sequence[int], model_path: ModelPath = host_model_path) -> list[ReloadStep]:
    """The reverse of a label move: `label` goes first, then the versions not in `keep_versions`
    (a version may only be unloaded once no label points at it)."""
    target = {s.name: s for s in specs}[model]
    labels = {k: v for k, v in target.version_labels.items() if k != label}

    def config_with(versions: Sequence[int]) -> str:
        return models_config_text([model_config(s, model_path, versions=versions, labels=labels)
                                   if s.name == model else model_config(s, model_path) for s in specs])

    return [ReloadStep(f"remove label {label!r} of {model}", config_with(sorted(current_versions)), {}),
            ReloadStep(f"unload {model} versions {sorted(set(current_versions) - set(keep_versions))}",
                       config_with(sorted(keep_versions)), {})]
