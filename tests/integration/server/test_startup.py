"""Start-up faults: bad flags, busy ports, missing or broken config. Each must exit non-zero and say why."""

from __future__ import annotations

import socket

import pytest

from tests.helpers.server import ServerExited, ServerProcess, free_port, run_server_expect_exit

pytestmark = pytest.mark.integration


def test_unknown_flag_lists_supported_flags():
    res = run_server_expect_exit(["--model_base_path=/x", "--bogus_flag=1"])
    assert res.returncode == 255  # tensorflow_model_server's main() returns -1
    assert "Unknown flag --bogus_flag" in res.stderr
    assert "Supported flags:" in res.stderr
    for flag in ("--port", "--rest_api_port", "--model_config_file", "--enable_batching"):
        assert flag in res.stderr


def test_bad_flag_value():
    res = run_server_expect_exit(["--model_base_path=/x", "--port=abc"])
    assert res.returncode == 255
    assert "Illegal value 'abc' for flag --port" in res.stderr
    assert res.stdout.startswith("usage: tfs-model-server\nFlags:\n\t--port=8500")


def test_no_model_is_an_error():
    res = run_server_expect_exit([f"--port={free_port()}"])
    assert res.returncode == 255
    assert res.stdout == (
        "Failed to start server. Error: INVALID_ARGUMENT: Both server_options.model_base_path "
        "and server_options.model_config_file are empty!\n"
    )


def test_version_flag():
    res = run_server_expect_exit(["--version"])
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert lines[0].startswith("TensorFlow ModelServer: 2.") and lines[1].startswith("TensorFlow Library: 2.")
    res = run_server_expect_exit(["--help"])
    assert res.returncode == 0
    for flag in ("--enable_serialization_as_tensor_content=false", "--enable_profiler=true"):
        assert flag in res.stdout


def test_port_already_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run_server_expect_exit(
            [f"--port={free_port()}", f"--rest_api_port={port}", f"--model_base_path={tmp_path}"]
        )
        assert res.returncode == 255
        assert f"REST port {port} on 127.0.0.1 is already in use" in res.stderr
        assert f"Failed to start server. Error: INVALID_ARGUMENT: Failed to start HTTP Server at localhost:{port}" in res.stdout
        res = run_server_expect_exit([f"--port={port}", f"--model_base_path={tmp_path}"])
        assert res.returncode == 255
        assert f"gRPC port {port} on 127.0.0.1 is already in use" in res.stderr
        assert "Failed to start server. Error: INVALID_ARGUMENT: Failed to BuildAndStart gRPC server" in res.stdout


def test_same_port_for_grpc_and_rest(tmp_path):
    port = free_port()
    res = run_server_expect_exit(
        [f"--port={port}", f"--rest_api_port={port}", f"--model_base_path={tmp_path}"]
    )
    assert res.returncode == 255
    assert "cannot be same as grpc_port" in res.stdout


def test_unreadable_and_invalid_model_config(tmp_path):
    res = run_server_expect_exit(
        [f"--port={free_port()}", f"--model_config_file={tmp_path / 'nope.config'}"]
    )
    assert res.returncode == 255
    assert res.stdout == (
        "Failed to start server. Error: NOT_FOUND: "
        f"{tmp_path / 'nope.config'}; No such file or directory\n"
    )
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_list { config { name: 'm' base_pth: '/x' } }")
    res = run_server_expect_exit([f"--port={free_port()}", f"--model_config_file={bad}"])
    assert res.returncode == 255
    assert (
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:40: Message type "
        '"tensorflow.serving.ModelConfig" has no field named "base_pth".'
    ) in res.stderr
    assert res.stdout == f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{bad}'\n"
    bad.write_text(
        "model_config_list { config { name: 'm' base_path: '/x' version_labels { key: 'bad-label' value: 1 } } }"
    )
    res = run_server_expect_exit([f"--port={free_port()}", f"--model_config_file={bad}"])
    assert res.returncode == 255
    assert "Failed to start server. Error: INVALID_ARGUMENT:" in res.stdout and "Invalid label" in res.stdout


def test_batching_parameters_with_the_classic_mistake(tmp_path):
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size: 128\n")  # TF Serving wants max_batch_size { value: 128 }
    res = run_server_expect_exit(
        [
            f"--port={free_port()}",
            f"--model_base_path={tmp_path}",
            "--enable_batching",
            f"--batching_parameters_file={params}",
        ]
    )
    assert res.returncode == 255
    assert "Error parsing text-format tensorflow.serving.BatchingParameters: 1:17:" in res.stderr
    assert f"INVALID_ARGUMENT: Invalid protobuf file: '{params}'" in res.stdout


def test_label_on_missing_version_at_startup(tmp_path):
    cfg = tmp_path / "models.config"
    cfg.write_text(
        f"model_config_list {{ config {{ name: 'm' base_path: '{tmp_path}/m' "
        "version_labels { key: 'stable' value: 3 } } }"
    )
    res = run_server_expect_exit([f"--port={free_port()}", f"--model_config_file={cfg}"])
    assert res.returncode == 255
    assert "Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to version 3 of model m" in res.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port=0", "--rest_api_port=8501"],
         "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."),
        (["--batching_parameters_file=/x"],
         "server_options.batching_parameters_file is set without setting "
         "server_options.enable_batching to true."),
        (["--tensorflow_session_parallelism=1", "--tensorflow_intra_op_parallelism=1",
          "--tensorflow_inter_op_parallelism=1"],
         "Either configure server_options.tensorflow_session_parallelism or "
         "(server_options.tensorflow_intra_op_parallelism, "
         "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all."),
    ],
)
def test_build_and_start_checks_use_upstream_texts(tmp_path, flags, message):
    res = run_server_expect_exit([f"--port={free_port()}", f"--model_base_path={tmp_path}", *flags])
    assert (res.returncode, res.stdout) == (255, f"Failed to start server. Error: INVALID_ARGUMENT: {message}\n")


@pytest.mark.parametrize("flag", ["monitoring_config_file", "ssl_config_file"])
def test_side_config_files_that_do_not_parse(tmp_path, flag):
    bad = tmp_path / "side.config"
    bad.write_text("nonsense {")
    res = run_server_expect_exit([f"--port={free_port()}", f"--model_base_path={tmp_path}", f"--{flag}={bad}"])
    assert res.returncode == 255
    assert "Error parsing text-format tensorflow.serving." in res.stderr
    assert res.stdout == f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{bad}'\n"


def test_session_config_file_and_refused_flags(tmp_path):
    bad = tmp_path / "session.config"
    bad.write_text("intra_op_parallelism_threads: 'x'")
    res = run_server_expect_exit(
        [f"--port={free_port()}", f"--model_base_path={tmp_path}", f"--tensorflow_session_config_file={bad}"]
    )
    assert res.returncode == 255
    assert "Error parsing text-format tensorflow.ConfigProto: 1:31:" in res.stderr
    for flag in ("--platform_config_file=/x", "--thread_pool_factory_config_file=/x", "--use_alts_credentials"):
        res = run_server_expect_exit([f"--port={free_port()}", f"--model_base_path={tmp_path}", flag])
        assert res.returncode == 255
        name = flag.split("=")[0]
        assert res.stdout.startswith(f"Failed to start server. Error: INVALID_ARGUMENT: {name}: "), res.stdout


def test_a_server_that_exits_is_reported_at_once_with_its_log(tmp_path):
    """The test fixture stops waiting when the process ends (ServerExited, with the log tail)
    instead of polling a dead port until its deadline (TimeoutError)."""
    args = [f"--model_config_file={tmp_path / 'missing.config'}"]
    with pytest.raises(ServerExited, match="server exited with") as info, ServerProcess(args):
        pass
    assert "missing.config" in str(info.value)
