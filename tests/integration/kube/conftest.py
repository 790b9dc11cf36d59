"""Fixtures shared by the emulated-cluster modules (split so xdist runs them side by side).

Imports stay inside the fixtures: a module skips itself when the `kubernetes` extra is missing,
and this file must not fail first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def khp_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime modules' claim folder (kube_env.build_store: khp v1, v2 and a corrupt v3)."""
    from tests.integration.kube.kube_env import build_store

    return build_store(tmp_path_factory.mktemp("claim"))


@pytest.fixture
def env(tmp_path: Path, khp_store: Path) -> Iterator[Any]:
    """A fresh emulated API server, node agent and runtime per test (kube_env.Env)."""
    from tests.integration.kube.kube_env import emulated_env

    with emulated_env(tmp_path, khp_store) as made:
        yield made


@pytest.fixture(scope="module")
def krl_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rollout modules' claim folder (rollout_cluster.build_store: krl v1, v2, failing v3)."""
    from tests.integration.kube.rollout_cluster import build_store

    return build_store(tmp_path_factory.mktemp("claim"))


@pytest.fixture
def cluster(krl_store: Path) -> Iterator[Any]:
    """(EmulatedApiServer, NodeAgent) for one rollout test."""
    from tests.integration.kube.rollout_cluster import emulated_cluster

    with emulated_cluster(krl_store) as both:
        yield both
