"""The demo model: a small Keras classifier the quick start deploys.

Trained briefly on synthetic data (three Gaussian blobs in 4 features), so it builds in
seconds on a CPU and needs no dataset from the network. Version 2 trains longer with
another seed: slightly different answers, which is what a canary rollout compares.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.files import write_atomic
from orchestrator.savedmodel import export_model, list_versions

DEMO_SPEC = """\
# The quick start's model: a Keras classifier, 4 features -> 3 class probabilities.
# Build it with `make demo-model`. Paths are relative to this file.
base_path: ../models/demo
version_policy: latest
"""

N_FEATURES, N_CLASSES = 4, 3


def synthetic_data(seed: int, n: int = 600) -> tuple[object, object]:
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0, 0], [3, 3, 0, 0], [0, 3, 3, 3]], dtype="float32")
    labels = rng.integers(0, N_CLASSES, size=n)
    features = centres[labels] + rng.normal(0, 1.0, size=(n, N_FEATURES)).astype("float32")
    return features.astype("float32"), labels


def build_classifier(seed: int, epochs: int) -> object:
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(N_FEATURES,), name="features"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(N_CLASSES, activation="softmax", name="probabilities"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = synthetic_data(seed)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def build_demo(models_dir: Path, configs_dir: Path, *, force: bool = False) -> list[Path]:
    """Write models/demo/1 and /2 (skipping versions that exist) and the demo spec if missing."""
    import tempfile

    from orchestrator.savedmodel import _export_keras_model

    written = []
    base = models_dir / "demo"
    existing = set(list_versions(base))
    for version, seed, epochs in ((1, 1, 3), (2, 2, 6)):
        if version in existing and not force:
            continue
        if version in existing:
            import shutil

            shutil.rmtree(base / str(version))
        model = build_classifier(seed, epochs)
        with tempfile.TemporaryDirectory(prefix="demo-export-") as tmp:
            saved = Path(tmp) / "saved"
            _export_keras_model(model, saved)
            written.append(export_model(saved, name="demo", models_dir=models_dir, version=version))
    configs_dir.mkdir(parents=True, exist_ok=True)
    spec_file = configs_dir / "demo.yaml"
    if not spec_file.exists():
        write_atomic(spec_file, DEMO_SPEC)
    return written
