"""Spec `logging:` -> TF Serving's logging_config in models.config -> the server's LogOptions."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorflow_serving.config import model_server_config_pb2

from orchestrator.errors import SpecError
from orchestrator.plan import model_config, models_config_text
from orchestrator.server.config import ConfigError, parse_model_server_config
from orchestrator.server.payload_log import LogOptions
from orchestrator.spec import load_spec


def _spec(tmp_path: Path, body: str):  # type: ignore[no-untyped-def]
    (tmp_path / "models" / "m" / "1").mkdir(parents=True, exist_ok=True)
    (tmp_path / "m.yaml").write_text(f"base_path: models/m\n{body}")
    return load_spec(str(tmp_path / "m.yaml"))


def test_logging_renders_upstream_logging_config_and_round_trips(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "logging: {sample: 0.25, path: logs, max_mb: 8}\n")
    assert spec.logging.path == tmp_path / "logs"  # relative to the spec file
    text = models_config_text([model_config(spec)])
    upstream = model_server_config_pb2.ModelServerConfig()
    from google.protobuf import text_format

    text_format.Parse(text, upstream)
    lc = upstream.model_config_list.config[0].logging_config
    assert lc.sampling_config.sampling_rate == 0.25
    assert lc.log_collector_config.type == "tfrecord"
    assert lc.log_collector_config.filename_prefix == f"{tmp_path / 'logs'}/m"
    (cfg,) = parse_model_server_config(text)
    assert cfg.logging == LogOptions(0.25, f"{tmp_path / 'logs'}/m", 8 * 1024 * 1024)


def test_no_logging_renders_nothing(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "")
    assert "logging_config" not in models_config_text([model_config(spec)])
    (cfg,) = parse_model_server_config(models_config_text([model_config(spec)]))
    assert cfg.logging is None


@pytest.mark.parametrize("body", ["logging: {sample: 1.5}\n", "logging: {max_mb: 0}\n",
                                  "logging: {samples: 0.1}\n"])
def test_bad_spec_logging_is_refused(tmp_path: Path, body: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(tmp_path, body)
    assert "logging" in str(err.value)


@pytest.mark.parametrize(
    ("fragment", "why"),
    [
        ('sampling_config { sampling_rate: 2 } log_collector_config { filename_prefix: "/x/m" }',
         r"outside \[0, 1\]"),
        ('sampling_config { sampling_rate: 0.5 } log_collector_config { type: "kafka" '
         'filename_prefix: "/x/m" }', "kafka"),
        ("sampling_config { sampling_rate: 0.5 }", "filename_prefix"),
        ('sampling_config { per_task_sampling_configs { sampling_rate: 1 } } '
         'log_collector_config { filename_prefix: "/x/m" }', "per_task_sampling_configs"),
    ],
)
def test_server_refuses_logging_config_it_cannot_honour(fragment: str, why: str) -> None:
    text = ('model_config_list { config { name: "m" base_path: "/models/m" '
            f"logging_config {{ {fragment} }} }} }}")
    with pytest.raises(ConfigError, match=why):
        parse_model_server_config(text)


def test_our_prediction_log_copy_matches_upstream_fields() -> None:
    """orchestrator/protos/prediction_log.proto must read what upstream's message writes."""
    from tensorflow_serving.apis import logging_pb2, prediction_log_pb2

    from orchestrator.protos import prediction_log_pb2 as ours

    for upstream, copy in ((prediction_log_pb2.PredictionLog, ours.PredictionLog),
                           (prediction_log_pb2.PredictLog, ours.PredictLog),
                           (prediction_log_pb2.ClassifyLog, ours.ClassifyLog),
                           (prediction_log_pb2.RegressLog, ours.RegressLog),
                           (prediction_log_pb2.MultiInferenceLog, ours.MultiInferenceLog),
                           (logging_pb2.LogMetadata, ours.LogMetadata)):
        for f in copy.DESCRIPTOR.fields:
            up = upstream.DESCRIPTOR.fields_by_name[f.name]
            assert (up.number, up.type) == (f.number, f.type), f.full_name
    rec = prediction_log_pb2.PredictionLog()
    rec.log_metadata.model_spec.name = "m"
    rec.log_metadata.model_spec.version.value = 3
    rec.log_metadata.request_origin = "rid"
    rec.log_metadata.timestamp_secs = 123
    rec.predict_log.request.inputs["x"].float_val.append(1.5)
    back = ours.PredictionLog.FromString(rec.SerializeToString())
    assert back.log_metadata.model_spec.version.value == 3
    assert back.predict_log.request.inputs["x"].float_val == [1.5]
    assert back.SerializeToString() == rec.SerializeToString()
