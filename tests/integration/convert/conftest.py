"""Fixtures for the packaging tests: a small Keras 3 classifier exported as a SavedModel, real
samples for it, and tools (node, npm packages, chromium) found where the install script puts them.

A missing tool fails the test under CI (CI set) and skips it, with the reason, elsewhere.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.requires import require

FEATURES = 8
CLASSES = 3
INSTALL_HINT = "run scripts/install_convert_deps.sh"


def need(condition: bool, what: str) -> None:
    """Fail under CI, skip elsewhere, when a tool the test needs is not installed."""
    require(condition, what, INSTALL_HINT)


def need_module(name: str) -> None:
    import importlib.util

    need(importlib.util.find_spec(name) is not None, f"python package {name}")


def need_node_packages() -> None:
    from orchestrator.convert.node import find_node, node_modules_dir

    need(find_node() is not None, "node")
    need((node_modules_dir() / "@tensorflow" / "tfjs" / "package.json").is_file(), "@tensorflow/tfjs")


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium")


def build_classifier(version_dir: Path, *, seed: int = 0) -> Path:
    """Keras 3 classifier 8 -> 16 (relu) -> 3 (softmax), exported with model.export()."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,), name="x"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    model.export(str(version_dir), verbose=False)
    return version_dir


@pytest.fixture(scope="session")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tmp/models/x with version 1 (the classifier)."""
    base = tmp_path_factory.mktemp("models") / "x"
    build_classifier(base / "1")
    return base


@pytest.fixture(scope="session")
def version_dir(model_base: Path) -> Path:
    return model_base / "1"


@pytest.fixture(scope="session")
def samples_array() -> np.ndarray:
    return np.random.default_rng(42).normal(size=(64, FEATURES)).astype(np.float32)


@pytest.fixture(scope="session")
def samples_npz(tmp_path_factory: pytest.TempPathFactory, samples_array: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("samples") / "samples.npz"
    np.savez(path, x=samples_array)
    return path


@pytest.fixture(scope="session")
def reference_outputs(version_dir: Path, samples_array: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    return fn(x=tf.constant(samples_array))["output_0"].numpy()
