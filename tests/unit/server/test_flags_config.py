"""Flags and config files: TF Serving's names, defaults, syntax and error texts."""

from __future__ import annotations

import pytest

from orchestrator.server import flags
from orchestrator.server.config import (
    ConfigError,
    VersionPolicy,
    parse_model_server_config,
    read_batching_parameters,
    read_monitoring_config,
    read_ssl_config,
)


def test_defaults_match_tensorflow_model_server():
    o = flags.parse([])
    assert (o.port, o.rest_api_port, o.rest_api_timeout_in_ms) == (8500, 0, 30000)
    assert (o.model_name, o.model_base_path, o.model_config_file) == ("default", "", "")
    assert o.file_system_poll_wait_seconds == 1
    assert o.model_config_file_poll_wait_seconds == 0
    assert o.enable_batching is False and o.enable_model_warmup is True
    assert o.allow_version_labels_for_unavailable_models is False
    assert o.saved_model_tags == "serve"


def test_syntax():
    o = flags.parse(
        [
            "--port=9000",
            "--enable_batching",
            "--enable_model_warmup=false",
            "--per_process_gpu_memory_fraction=0.5",
        ]
    )
    assert (
        o.port,
        o.enable_batching,
        o.enable_model_warmup,
        o.per_process_gpu_memory_fraction,
    ) == (9000, True, False, 0.5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nope=1"], "Unknown flag --nope. Supported flags: --port,"),
        (["--port=x"], "Illegal value 'x' for flag --port"),
        (["--port"], "Flag --port needs a value"),
        (["--enable_batching=maybe"], "Illegal value 'maybe' for flag --enable_batching"),
        (["positional"], "Unexpected argument 'positional'"),
    ],
)
def test_bad_flags(argv, message):
    with pytest.raises(flags.FlagError) as e:
        flags.parse(argv)
    assert message in str(e.value)


def test_validate_needs_a_model():
    with pytest.raises(flags.FlagError, match="are empty"):
        flags.validate(flags.parse([]))
    flags.validate(flags.parse(["--model_base_path=/m"]))


def test_every_contract_flag_is_known():
    names = {f.name for f in flags.FLAGS}
    for name in (
        "port",
        "rest_api_port",
        "rest_api_timeout_in_ms",
        "model_config_file",
        "model_config_file_poll_wait_seconds",
        "model_name",
        "model_base_path",
        "file_system_poll_wait_seconds",
        "enable_batching",
        "batching_parameters_file",
        "monitoring_config_file",
        "allow_version_labels_for_unavailable_models",
        "tensorflow_intra_op_parallelism",
        "tensorflow_inter_op_parallelism",
        "per_process_gpu_memory_fraction",
        "enable_model_warmup",
        "ssl_config_file",
        "grpc_channel_arguments",
        "enable_grpc_healthcheck_service",
    ):
        assert name in names


def test_model_server_config():
    text = """
    model_config_list {
      config { name: "a" base_path: "/m/a" model_platform: "tensorflow"
               model_version_policy { specific { versions: 3 versions: 1 } }
               version_labels { key: "stable" value: 1 } }
      config { name: "b" base_path: "/m/b" model_version_policy { latest { num_versions: 2 } } }
      config { name: "c" base_path: "/m/c" model_version_policy { all {} } }
    }"""
    a, b, c = parse_model_server_config(text)
    assert a.policy == VersionPolicy("specific", versions=(1, 3)) and a.labels == {"stable": 1}
    assert b.policy == VersionPolicy("latest", num_versions=2)
    assert c.policy.kind == "all"


def test_policies_select():
    found = [1, 2, 5, 9]
    assert VersionPolicy().select(found) == {9}
    assert VersionPolicy("latest", num_versions=2).select(found) == {5, 9}
    assert VersionPolicy("all").select(found) == set(found)
    assert VersionPolicy("specific", versions=(2, 7)).select(found) == {2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model_config_list { config { name: "a" } }', "has no base_path"),
        (
            'model_config_list { config { name: "a" base_path: "/x" } config { name: "a" base_path: "/y" } }',
            "multiple times",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/x" version_labels { key: "a-b" value: 1 } } }',
            "Invalid label",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/x" model_platform: "pytorch" } }',
            "not supported",
        ),
        ("model_config_list { nonsense: 1 }", "cannot parse ModelServerConfig"),
    ],
)
def test_bad_model_server_config(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_model_server_config(text)


def test_batching_parameters(tmp_path):
    p = tmp_path / "b.config"
    p.write_text(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 1000 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16\n"
    )
    opts = read_batching_parameters(str(p), cpus=4)
    assert (
        opts.max_batch_size,
        opts.batch_timeout_micros,
        opts.num_batch_threads,
        opts.allowed_batch_sizes,
    ) == (16, 1000, 4, (8, 16))
    p.write_text("max_batch_size: 16\n")
    with pytest.raises(ConfigError, match="Invalid protobuf file: "):
        read_batching_parameters(str(p), cpus=1)
    p.write_text("max_batch_size { value: 16 }\nallowed_batch_sizes: 8\n")
    with pytest.raises(ConfigError, match="must equal max_batch_size"):
        read_batching_parameters(str(p), cpus=1)


def test_monitoring_and_ssl(tmp_path):
    assert read_monitoring_config("").enable is False
    p = tmp_path / "m.config"
    p.write_text("prometheus_config { enable: true }")
    m = read_monitoring_config(str(p))
    assert m.enable and m.path == "/monitoring/prometheus/metrics"
    s = tmp_path / "ssl.config"
    s.write_text('server_key: "K" server_cert: "C" client_verify: true')
    cfg = read_ssl_config(str(s))
    assert (cfg.server_key, cfg.server_cert, cfg.client_verify) == ("K", "C", True)
