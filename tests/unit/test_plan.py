"""Plans: golden files for what TF Serving reads, each parsed back with the real protos."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from orchestrator.errors import SpecError
from orchestrator.plan import (
    BATCHING_CONFIG,
    MODELS_CONFIG,
    MONITORING_CONFIG,
    build_plan,
    container_model_path,
    plan_label_drop,
    plan_label_move,
    plan_safe_reload,
)
from orchestrator.protos import config_pb2
from orchestrator.spec import parse_spec

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    for name, versions in (("alpha", (1, 2, 3)), ("beta", (7,))):
        for v in versions:
            (tmp_path / "models" / name / str(v)).mkdir(parents=True)
    (tmp_path / "serving_configs").mkdir()
    return tmp_path / "serving_configs"


def spec(configs: Path, name: str, text: str):
    path = configs / f"{name}.yaml"
    path.write_text(text)
    return parse_spec(text, file=path)


def check_golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    if UPDATE:
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden} (run with UPDATE_GOLDEN=1 once)"
    assert text == golden.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 to accept)"


ALPHA = """
base_path: ../models/alpha
version_policy: {specific: [2, 3]}
version_labels: {stable: 2, canary: 3}
batching: {enabled: true, max_batch_size: 16, batch_timeout_micros: 500, allowed_batch_sizes: [8, 16]}
threads: {intra_op: 2}
"""


def test_two_models_one_server_golden(configs: Path) -> None:
    specs = [spec(configs, "alpha", ALPHA), spec(configs, "beta", "base_path: ../models/beta\n" + ALPHA.split("\n", 4)[4])]
    plan = build_plan(specs, config_dir="/config", model_path=container_model_path, grpc_port=8500, rest_port=8501)
    check_golden("two_models.models.config", plan.files[MODELS_CONFIG])
    check_golden("two_models.batching_parameters.txt", plan.files[BATCHING_CONFIG])
    check_golden("two_models.monitoring.config", plan.files[MONITORING_CONFIG])
    check_golden("two_models.args.txt", "\n".join(plan.args) + "\n")

    parsed = text_format.Parse(plan.files[MODELS_CONFIG], model_server_config_pb2.ModelServerConfig())
    alpha, beta = parsed.model_config_list.config
    assert (alpha.name, alpha.base_path, alpha.model_platform) == ("alpha", "/models/alpha", "tensorflow")
    assert list(alpha.model_version_policy.specific.versions) == [2, 3]
    assert dict(alpha.version_labels) == {"stable": 2, "canary": 3}
    assert beta.model_version_policy.latest.num_versions == 1

    batching = text_format.Parse(plan.files[BATCHING_CONFIG], config_pb2.BatchingParameters())
    assert batching.max_batch_size.value == 16 and list(batching.allowed_batch_sizes) == [8, 16]
    assert "max_batch_size {" in plan.files[BATCHING_CONFIG], "wrapper types, as TF Serving parses them"
    monitoring = text_format.Parse(plan.files[MONITORING_CONFIG], config_pb2.MonitoringConfig())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    assert "--enable_batching=true" in plan.args
    assert "--tensorflow_intra_op_parallelism=2" in plan.args
    assert plan.args[:3] == ("--port=8500", "--rest_api_port=8501", "--model_config_file=/config/models.config")


def test_minimal_plan_golden(configs: Path) -> None:
    plan = build_plan([spec(configs, "beta", "base_path: ../models/beta\nmonitoring: {prometheus: false}\n")],
                      config_dir="/config", model_path=container_model_path)
    check_golden("minimal.models.config", plan.files[MODELS_CONFIG])
    assert set(plan.files) == {MODELS_CONFIG}
    assert not any(a.startswith(("--enable_batching", "--monitoring")) for a in plan.args)
    assert (plan.grpc_port, plan.rest_port) == (8500, 8501)


def test_policy_all_and_gpu_fraction(configs: Path) -> None:
    s = spec(configs, "alpha", "base_path: ../models/alpha\nversion_policy: all\ndevice: gpu\ngpu: {memory_fraction: 0.25}\n")
    plan = build_plan([s], config_dir="/c")
    parsed = text_format.Parse(plan.files[MODELS_CONFIG], model_server_config_pb2.ModelServerConfig())
    assert parsed.model_config_list.config[0].model_version_policy.HasField("all")
    assert "--per_process_gpu_memory_fraction=0.25" in plan.args
    assert parsed.model_config_list.config[0].base_path == str(s.base_path)


def test_prefer_tflite_model_renders_the_flag(configs: Path) -> None:
    plain = build_plan([spec(configs, "alpha", "base_path: ../models/alpha\n")], config_dir="/c")
    assert not any(a.startswith("--prefer_tflite_model") for a in plain.args)
    lite = spec(configs, "alpha", "base_path: ../models/alpha\nprefer_tflite_model: true\n")
    assert "--prefer_tflite_model=true" in build_plan([lite], config_dir="/c").args
    other = spec(configs, "beta", "base_path: ../models/beta\n")
    with pytest.raises(SpecError, match="prefer_tflite_model differs"):
        build_plan([lite, other], config_dir="/c")


def test_workers_render_rest_api_num_threads(configs: Path) -> None:
    """`workers: N` is TF Serving's --rest_api_num_threads (our server: worker processes; the
    real image: REST threads); unset, the flag is left out so each server keeps its default."""
    plain = build_plan([spec(configs, "alpha", "base_path: ../models/alpha\n")], config_dir="/c")
    assert not any(a.startswith("--rest_api_num_threads") for a in plain.args)
    two = spec(configs, "alpha", "base_path: ../models/alpha\nworkers: 2\n")
    assert "--rest_api_num_threads=2" in build_plan([two], config_dir="/c").args
    container = build_plan([two], config_dir="/config", model_path=container_model_path,
                           grpc_port=8500, rest_port=8501)
    assert "--rest_api_num_threads=2" in container.args
    from orchestrator.server import flags as server_flags

    assert server_flags.parse(list(container.args)).rest_api_num_threads == 2  # our server reads it
    from orchestrator.runtime.docker.templates import container_template

    assert "--rest_api_num_threads=2" in container_template([two], "/cfg").command  # the image's
    other = spec(configs, "beta", "base_path: ../models/beta\n")
    with pytest.raises(SpecError, match="workers differs"):
        build_plan([two, other], config_dir="/c")


def test_onednn_is_the_servers_environment(configs: Path) -> None:
    """`onednn: false|true` is TensorFlow's TF_ENABLE_ONEDNN_OPTS for the server (the official
    image reads it too): in the plan's env and the container's environment, never a flag;
    unset, the environment is left alone."""
    from orchestrator.runtime.docker.templates import container_template

    plain = spec(configs, "alpha", "base_path: ../models/alpha\n")
    assert build_plan([plain], config_dir="/c").env == {}
    assert "TF_ENABLE_ONEDNN_OPTS" not in container_template([plain], "/cfg").environment
    for value, text in ((False, "0"), (True, "1")):
        s = spec(configs, "alpha", f"base_path: ../models/alpha\nonednn: {str(value).lower()}\n")
        plan = build_plan([s], config_dir="/c")
        assert plan.env == {"TF_ENABLE_ONEDNN_OPTS": text}
        assert not any("onednn" in a.lower() for a in plan.args)
        template = container_template([s], "/cfg")
        assert template.environment == {"MODEL_NAME": "alpha", "TF_ENABLE_ONEDNN_OPTS": text}
    off = spec(configs, "alpha", "base_path: ../models/alpha\nonednn: false\n")
    other = spec(configs, "beta", "base_path: ../models/beta\n")
    with pytest.raises(SpecError, match="onednn differs"):
        build_plan([off, other], config_dir="/c")


def test_conflicting_server_settings_are_refused(configs: Path) -> None:
    a = spec(configs, "alpha", "base_path: ../models/alpha\n")
    b = spec(configs, "beta", "base_path: ../models/beta\nbatching: {enabled: true}\n")
    with pytest.raises(SpecError, match="batching differs"):
        build_plan([a, b], config_dir="/c")


def test_label_move_is_two_reloads_keeping_other_models(configs: Path) -> None:
    a = spec(configs, "alpha", "base_path: ../models/alpha\nversion_policy: {specific: [2]}\nversion_labels: {stable: 2}\n")
    b = spec(configs, "beta", "base_path: ../models/beta\n")
    steps = plan_label_move([a, b], "alpha", "stable", 3, current_versions=[2], model_path=container_model_path)
    assert len(steps) == 2
    first, second = (text_format.Parse(s.models_config, model_server_config_pb2.ModelServerConfig()) for s in steps)
    # Step 1 loads the new version beside the old one; the label stays where it is.
    assert list(first.model_config_list.config[0].model_version_policy.specific.versions) == [2, 3]
    assert dict(first.model_config_list.config[0].version_labels) == {"stable": 2}
    assert steps[0].wait_available == {}
    # Step 2 may only be applied once version 3 is AVAILABLE: then the label moves.
    assert steps[1].wait_available == {"alpha": (3,)}
    assert dict(second.model_config_list.config[0].version_labels) == {"stable": 3}
    # A reload replaces the whole config: beta is in both steps.
    assert [c.name for c in second.model_config_list.config] == ["alpha", "beta"]
    check_golden("label_move.step2.models.config", steps[1].models_config)


def test_label_drop_removes_the_label_before_the_version(configs: Path) -> None:
    a = spec(configs, "alpha", "base_path: ../models/alpha\nversion_policy: {specific: [2]}\nversion_labels: {stable: 2}\n")
    a = a.model_copy(update={"version_labels": {"stable": 2, "canary": 3}})
    steps = plan_label_drop([a], "alpha", "canary", current_versions=[2, 3], keep_versions=[2])
    first, second = (text_format.Parse(s.models_config, model_server_config_pb2.ModelServerConfig()) for s in steps)
    assert dict(first.model_config_list.config[0].version_labels) == {"stable": 2}
    assert list(first.model_config_list.config[0].model_version_policy.specific.versions) == [2, 3]
    assert list(second.model_config_list.config[0].model_version_policy.specific.versions) == [2]


def test_safe_reload_labels_only_available_versions_first(configs: Path) -> None:
    a = spec(configs, "alpha", "base_path: ../models/alpha\nversion_policy: {specific: [2, 3]}\n"
             "version_labels: {stable: 2, canary: 3}\n")
    steps = plan_safe_reload([a], {"alpha": [2]}, {"alpha": [2, 3]})
    first = text_format.Parse(steps[0].models_config, model_server_config_pb2.ModelServerConfig())
    assert dict(first.model_config_list.config[0].version_labels) == {"stable": 2}
    assert steps[0].wait_available == {} and steps[1].wait_available == {"alpha": (2, 3)}
    # Every labelled version already AVAILABLE: one reload, nothing to wait for before it.
    only = plan_safe_reload([a], {"alpha": [2, 3]}, {"alpha": [2, 3]})
    assert len(only) == 1 and only[0].wait_available == {} and only[0].models_config == steps[1].models_config
