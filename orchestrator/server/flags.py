"""`tensorflow_model_server` command-line flags: same names, syntax and defaults.

TF Serving parses flags with TensorFlow's own parser: `--name=value` for every type and a bare
`--name` for booleans (`--name=true|false|1|0` too). An unknown flag stops the server with a message
that lists the flags we accept. Every upstream flag is here, so command lines written for TF
Serving keep working: each is honoured, refused with a clear error when set (ALTS, platform and
thread-pool plug-in files), or, where it cannot apply, its help starts with "Differs:" and the
README's compatibility table says how.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

_CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class Flag:
    name: str
    type: type
    default: Any
    help: str


FLAGS: tuple[Flag, ...] = (
    Flag("port", int, 8500, "TCP port for the gRPC API (0 disables gRPC over TCP)"),
    Flag("grpc_socket_path", str, "", "If non-empty, also serve gRPC on this UNIX socket"),
    Flag("rest_api_port", int, 0, "Port for the HTTP/REST API (0 = no REST API)"),
    Flag(
        "rest_api_num_threads",
        int,
        0,
        "Differs: worker processes serving both ports, min(N, CPUs); 0 = one process",
    ),
    Flag("rest_api_timeout_in_ms", int, 30000, "Timeout for HTTP/REST API calls"),
    Flag("rest_api_enable_cors_support", bool, False, "Enable CORS headers in REST responses"),
    Flag("enable_batching", bool, False, "Enable batching"),
    Flag(
        "allow_version_labels_for_unavailable_models",
        bool,
        False,
        "Allow assigning a NEW label to a version that is not yet available",
    ),
    Flag("batching_parameters_file", str, "", "BatchingParameters text proto (optional)"),
    Flag(
        "enable_per_model_batching_parameters",
        bool,
        False,
        "With --enable_batching: each version's batching_params.pbtxt replaces the global "
        "parameters (but the thread count); versions without one are not batched",
    ),
    Flag(
        "model_config_file",
        str,
        "",
        "ModelServerConfig text proto; overrides --model_name/--model_base_path",
    ),
    Flag(
        "model_config_file_poll_wait_seconds",
        int,
        0,
        "Interval in seconds between re-reads of --model_config_file (0 = read once)",
    ),
    Flag("model_name", str, "default", "Name of model (ignored if --model_config_file is set)"),
    Flag("model_base_path", str, "", "Path to export (ignored if --model_config_file is set)"),
    Flag("num_load_threads", int, 0, "Threads for loading models (0 = two)"),
    Flag(
        "num_unload_threads",
        int,
        0,
        "Differs: an unload only closes a session, on the event loop; this number is not used",
    ),
    Flag("max_num_load_retries", int, 5, "Retries of a failed model load (transient errors only)"),
    Flag("load_retry_interval_micros", int, 60_000_000, "Wait between load retries"),
    Flag(
        "file_system_poll_wait_seconds", int, 1, "Interval in seconds between version folder scans"
    ),
    Flag(
        "flush_filesystem_caches",
        bool,
        True,
        "Differs: this server keeps no file-system caches to flush; no effect",
    ),
    Flag("tensorflow_session_parallelism", int, 0, "Threads for a TensorFlow session (0 = auto)"),
    Flag(
        "tensorflow_session_config_file",
        str,
        "",
        "ConfigProto text proto for every session; thread and GPU flags override it",
    ),
    Flag("tensorflow_intra_op_parallelism", int, 0, "Intra-op threads (0 = auto)"),
    Flag("tensorflow_inter_op_parallelism", int, 0, "Inter-op threads (0 = auto)"),
    Flag("use_alts_credentials", bool, False, "Refused: Google ALTS needs Google Cloud"),
    Flag("ssl_config_file", str, "", "SSLConfig text proto for gRPC TLS"),
    Flag(
        "platform_config_file",
        str,
        "",
        "Refused: set sessions and batching with the flags (--tensorflow_session_config_file...)",
    ),
    Flag("per_process_gpu_memory_fraction", float, 0.0, "Fraction of GPU memory per process"),
    Flag("saved_model_tags", str, "serve", "Comma-separated MetaGraphDef tags to load"),
    Flag("grpc_channel_arguments", str, "", "Comma-separated key=value gRPC server arguments"),
    Flag(
        "grpc_max_threads",
        int,
        4 * _CPUS,
        "Differs: gRPC handlers are coroutines on each worker's event loop; not used",
    ),
    Flag("enable_model_warmup", bool, True, "Replay assets.extra/tf_serving_warmup_requests"),
    Flag("num_request_iterations_for_warmup", int, 1, "Times each warmup request is replayed"),
    Flag("version", bool, False, "Print the version and exit"),
    Flag("monitoring_config_file", str, "", "MonitoringConfig text proto (Prometheus)"),
    Flag(
        "log_format",
        str,
        "text",
        "Log lines as text or json (ours; TF Serving has no such flag). Env: TFS_LOG_FORMAT",
    ),
    Flag(
        "remove_unused_fields_from_bundle_metagraph",
        bool,
        True,
        "Differs: TensorFlow's loader keeps the MetaGraphDef either way; no effect",
    ),
    Flag(
        "prefer_tflite_model",
        bool,
        False,
        "Serve model.tflite from the version folder with LiteRT when there is one",
    ),
    Flag("num_tflite_pools", int, _CPUS, "TFLite interpreter pools per model"),
    Flag("num_tflite_interpreters_per_pool", int, 1, "TFLite interpreters per pool"),
    Flag("enable_signature_method_name_check", bool, False, "Check signature method names"),
    Flag(
        "xla_cpu_compilation_enabled",
        bool,
        False,
        "Differs: XLA:CPU JIT is always available to models that ask for it (jit_compile)",
    ),
    Flag(
        "xla_gpu_compilation_enabled",
        bool,
        False,
        "Differs: XLA JIT is always available to models that ask for it (jit_compile)",
    ),
    Flag("enable_profiler", bool, True, "Serve tensorflow.ProfilerService on the gRPC port"),
    Flag(
        "thread_pool_factory_config_file",
        str,
        "",
        "Refused: ThreadPoolFactoryConfig plug-ins are C++ registrations",
    ),
    Flag("mixed_precision", str, "", "bfloat16: oneDNN auto mixed precision in every session"),
    Flag(
        "skip_initialize_tpu",
        bool,
        False,
        "Differs: no TPU support, so there is never a TPU system to initialize",
    ),
    Flag(
        "enable_grpc_healthcheck_service",
        bool,
        False,
        "Differs: grpc.health.v1 is always served, and follows model availability",
    ),
    Flag(
        "enable_serialization_as_tensor_content",
        bool,
        False,
        "Predict outputs as tensor_content (default: typed *_val fields)",
    ),
)

_BY_NAME = {f.name: f for f in FLAGS}


_REFUSED = {
    "platform_config_file": (
        "PlatformConfigMap files configure TF Serving's C++ source adapters, which this server "
        "does not have; use --tensorflow_session_config_file, --enable_batching and "
        "--batching_parameters_file instead"
    ),
    "thread_pool_factory_config_file": (
        "ThreadPoolFactoryConfig names C++ thread-pool factories, which this server does not "
        "have; session runs use TFS_RUN_THREADS threads"
    ),
}


class FlagError(ValueError):
    """A command line that tensorflow_model_server would reject."""


class Options(SimpleNamespace):
    """Parsed flags; attribute names are the flag names."""


def _convert(flag: Flag, raw: str) -> Any:
    if flag.type is bool:
        low = raw.lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise FlagError(f"Illegal value '{raw}' for flag --{flag.name}: expected true or false")
    try:
        return flag.type(raw)
    except ValueError:
        kind = {int: "an integer", float: "a number"}.get(flag.type, flag.type.__name__)
        raise FlagError(f"Illegal value '{raw}' for flag --{flag.name}: expected {kind}") from None


_TYPE_NAME = {int: "int32", float: "float", bool: "bool", str: "string"}


def usage() -> str:
    """The flag list in tensorflow::Flags::Usage's layout."""
    lines = ["usage: tfs-model-server", "Flags:"]
    for f in FLAGS:
        default = str(f.default).lower() if f.type is bool else str(f.default)
        if f.type is str:
            default = f'"{default}"'
        name = "int64" if f.name == "load_retry_interval_micros" else _TYPE_NAME[f.type]
        lines.append(f"\t{'--' + f.name + '=' + default:<33}\t{name}\t{f.help}")
    return "\n".join(lines)


def parse(argv: list[str]) -> Options:
    """Parse argv (without the program name) into Options; raise FlagError on bad input."""
    values = {f.name: f.default for f in FLAGS}
    # Read here, not at import: a preloaded launcher imports this module once for many servers.
    values["log_format"] = os.environ.get("TFS_LOG_FORMAT", "text")
    for arg in argv:
        if not arg.startswith("-") or arg in ("-", "--"):
            raise FlagError(f"Unexpected argument '{arg}': flags take the form --name=value")
        body = arg.lstrip("-")
        name, eq, raw = body.partition("=")
        flag = _BY_NAME.get(name)
        if flag is None:
            known = ", ".join("--" + f.name for f in FLAGS)
            raise FlagError(f"Unknown flag --{name}. Supported flags: {known}")
        if not eq:
            if flag.type is not bool:
                raise FlagError(f"Flag --{name} needs a value: --{name}=VALUE")
            values[name] = True
        else:
            values[name] = _convert(flag, raw)
    return Options(**values)


def validate(opts: Options) -> None:
    """TF Serving's checks before it starts (server.cc BuildAndStart), with its texts."""
    if opts.port == 0 and not opts.grpc_socket_path:
        raise FlagError(
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must "
            "be set."
        )
    if opts.use_alts_credentials and opts.ssl_config_file:
        raise FlagError(
            "Either use_alts_credentials must be false or ssl_config_file must be empty."
        )
    if opts.use_alts_credentials:
        raise FlagError(
            "--use_alts_credentials: Google ALTS credentials need Google Cloud's ALTS handshaker; "
            "this server cannot use them (use --ssl_config_file for TLS)"
        )
    for name, why in _REFUSED.items():
        if getattr(opts, name):
            raise FlagError(f"--{name}: {why}")

    if not opts.model_base_path and not opts.model_config_file:
        raise FlagError(
            "Both server_options.model_base_path and server_options.model_config_file are empty!"
        )
    if not opts.platform_config_file and not opts.enable_batching and opts.batching_parameters_file:
        raise FlagError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if (
        opts.tensorflow_intra_op_parallelism > 0
        and opts.tensorflow_inter_op_parallelism > 0
        and opts.tensorflow_session_parallelism > 0
    ):
        raise FlagError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all."
        )
    if opts.log_format not in ("text", "json"):
        raise FlagError(f"--log_format={opts.log_format} (or TFS_LOG_FORMAT): expected text or json")
    for name in ("port", "rest_api_port"):
        if not 0 <= getattr(opts, name) <= 65535:
            raise FlagError(f"--{name}={getattr(opts, name)} is not a valid port (0-65535)")
    if workers(opts) > 1 and opts.grpc_socket_path:
        raise FlagError(
            "--grpc_socket_path: a UNIX socket cannot be shared by worker processes; "
            "drop --rest_api_num_threads (one process) or serve gRPC on --port only"
        )


def workers(opts: Options) -> int:
    """Worker processes for --rest_api_num_threads (see server.workers); FlagError if nonsense."""
    from orchestrator.server.workers import worker_count

    try:
        return worker_count(opts.rest_api_num_threads, _CPUS)
    except ValueError as e:
        raise FlagError(str(e)) from None
