"""The runtime and router interfaces a new runtime implements (no process is started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import RuntimeFailure
from orchestrator.router.base import Router, check_weights
from orchestrator.router.haproxy import HAProxyRouter, RouterConfig
from orchestrator.runtime.base import Replica
from orchestrator.state import StateStore


def test_haproxy_is_a_router(tmp_path: Path) -> None:
    router = HAProxyRouter(tmp_path, endpoint=("127.0.0.1", 9501, 9500))
    assert isinstance(router, Router)
    assert router.endpoint() == ("127.0.0.1", 9501, 9500)


def test_a_router_opened_without_ports_says_so(tmp_path: Path) -> None:
    from orchestrator.errors import RuntimeFailure

    with pytest.raises(RuntimeFailure, match="without its ports"):
        HAProxyRouter(tmp_path).endpoint()


@pytest.mark.parametrize("weights", [{"stable": 90, "canary": 20}, {"canary": -1}, {"blue": 50, "canary": 50}])
def test_weights_must_be_stable_and_canary_summing_to_100(weights: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="S \\+ C = 100"):
        check_weights(weights)
    assert check_weights({"canary": 25}) == (75, 25)


def test_a_replica_says_where_it_answers() -> None:
    r = Replica("tfso-m-0-abc", "canary", 3, "127.0.0.1", 9501, 9500)
    assert (r.rest_url, r.grpc_address) == ("http://127.0.0.1:9501", "127.0.0.1:9500")


def test_a_canary_record_is_not_a_deployment(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save("m", {"name": "m", "runtime": "local", "replicas": []})
    store.save_canary("m", {"name": "m.canary", "version": 2, "replicas": []})
    assert store.names() == ["m"]
    assert store.load_canary("m") == {"name": "m.canary", "version": 2, "replicas": []}
    assert (tmp_path / "deployments" / "m.canary.json").is_file()  # where it always was
    store.delete_canary("m")
    assert store.load_canary("m") is None


CONFIG = RouterConfig(name="m", model="m", rest_port=9501, grpc_port=9500, stable=())


def test_router_refuses_an_admin_socket_path_haproxy_cannot_bind(tmp_path: Path) -> None:
    """HAProxy refuses a unix socket path over 97 bytes at start-up; say so before, with the fix."""
    deep = tmp_path / ("d" * (120 - len(str(tmp_path))))
    router = HAProxyRouter(deep)  # a handle alone binds nothing (a deploy may fail before)
    with pytest.raises(RuntimeFailure, match="TFSO_STATE_DIR") as err:
        router.write_config(CONFIG)
    assert "97" in str(err.value) and not deep.exists()
    HAProxyRouter(tmp_path).write_config(CONFIG)  # a short folder is fine
