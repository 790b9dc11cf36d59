"""Start-up faults: bad flags, busy ports, missing or broken config. Each must exit non-zero and say why."""

from __future__ import annotations

import socket

import pytest

from tests.helpers.server import ServerExited, ServerProcess, free_port, run_server_expect_exit

pytestmark = pytest.mark.integration


def test_unknown_flag_lists_supported_flags():
    res = run_server_expect_exit(["--model_base_path=/x", "--bogus_flag=1"])
    assert res.returncode != 0
    assert "Unknown flag --bogus_flag" in res.stderr
    assert "Supported flags:" in res.stderr
    for flag in ("--port", "--rest_api_port", "--model_config_file", "--enable_batching"):
        assert flag in res.stderr


def test_bad_flag_value():
    res = run_server_expect_exit(["--model_base_path=/x", "--port=abc"])
    assert res.returncode != 0
    assert "Illegal value 'abc' for flag --port" in res.stderr


def test_no_model_is_an_error():
    res = run_server_expect_exit([f"--port={free_port()}"])
    assert res.returncode != 0
    assert "model_base_path and server_options.model_config_file are empty" in res.stderr


def test_version_flag():
    res = run_server_expect_exit(["--version"])
    assert res.returncode == 0
    assert "TensorFlow ModelServer" in res.stdout


def test_port_already_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run_server_expect_exit(
            [f"--port={free_port()}", f"--rest_api_port={port}", f"--model_base_path={tmp_path}"]
        )
        assert res.returncode == 1
        assert f"REST port {port} on 127.0.0.1 is already in use" in res.stderr
        res = run_server_expect_exit([f"--port={port}", f"--model_base_path={tmp_path}"])
        assert res.returncode == 1
        assert f"gRPC port {port} on 127.0.0.1 is already in use" in res.stderr


def test_same_port_for_grpc_and_rest(tmp_path):
    port = free_port()
    res = run_server_expect_exit(
        [f"--port={port}", f"--rest_api_port={port}", f"--model_base_path={tmp_path}"]
    )
    assert res.returncode == 1
    assert "cannot be same as grpc_port" in res.stderr


def test_unreadable_and_invalid_model_config(tmp_path):
    res = run_server_expect_exit(
        [f"--port={free_port()}", f"--model_config_file={tmp_path / 'nope.config'}"]
    )
    assert res.returncode == 1
    assert "nope.config" in res.stderr
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_list { config { name: 'm' base_pth: '/x' } }")
    res = run_server_expect_exit([f"--port={free_port()}", f"--model_config_file={bad}"])
    assert res.returncode == 1
    assert "cannot parse ModelServerConfig" in res.stderr
    bad.write_text(
        "model_config_list { config { name: 'm' base_path: '/x' version_labels { key: 'bad-label' value: 1 } } }"
    )
    res = run_server_expect_exit([f"--port={free_port()}", f"--model_config_file={bad}"])
    assert res.returncode == 1
    assert "Invalid label" in res.stderr


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
    assert res.returncode == 1
    assert "cannot parse BatchingParameters" in res.stderr


def test_label_on_missing_version_at_startup(tmp_path):
    cfg = tmp_path / "models.config"
    cfg.write_text(
        f"model_config_list {{ config {{ name: 'm' base_path: '{tmp_path}/m' "
        "version_labels { key: 'stable' value: 3 } } }"
    )
    res = run_server_expect_exit([f"--port={free_port()}", f"--model_config_file={cfg}"])
    assert res.returncode == 1
    assert "Request to assign label to version 3 of model m" in res.stderr


def test_a_server_that_exits_is_reported_at_once_with_its_log(tmp_path):
    """The test fixture stops waiting when the process ends (ServerExited, with the log tail)
    instead of polling a dead port until its deadline (TimeoutError)."""
    args = [f"--model_config_file={tmp_path / 'missing.config'}"]
    with pytest.raises(ServerExited, match="server exited with") as info, ServerProcess(args):
        pass
    assert "missing.config" in str(info.value)
