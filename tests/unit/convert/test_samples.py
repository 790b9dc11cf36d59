from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.convert import ConvertError, load_samples, synthetic_samples
from orchestrator.savedmodel import SignatureMeta, TensorMeta

ONE = SignatureMeta("tensorflow/serving/predict", {"x": TensorMeta("DT_FLOAT", [-1, 8])},
                    {"output_0": TensorMeta("DT_FLOAT", [-1, 3])})
TWO = SignatureMeta(
    "tensorflow/serving/predict",
    {"ids": TensorMeta("DT_INT64", [-1, 4]), "x": TensorMeta("DT_FLOAT", [-1, 2])},
    {"y": TensorMeta("DT_FLOAT", [-1, 1])},
)


def test_npz_by_input_name_and_cast(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    np.savez(path, x=np.ones((5, 8), np.float64), labels=np.zeros(5))
    samples = load_samples(path, ONE)
    assert samples.arrays["x"].dtype == np.float32 and samples.count == 5
    assert samples.source == f"file:{path}" and not samples.synthetic
    assert samples.example(2)["x"].shape == (1, 8)
    assert samples.head(2).count == 2


def test_single_array_for_single_input(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.zeros((3, 8), np.float32))
    np.savez(tmp_path / "s.npz", anything=np.zeros((3, 8), np.float32))
    assert load_samples(tmp_path / "s.npy", ONE).count == 3
    assert load_samples(tmp_path / "s.npz", ONE).count == 3


def test_two_inputs_need_names(tmp_path: Path) -> None:
    np.savez(tmp_path / "ok.npz", ids=np.zeros((2, 4), np.int32), x=np.zeros((2, 2)))
    samples = load_samples(tmp_path / "ok.npz", TWO)
    assert samples.arrays["ids"].dtype == np.int64
    np.savez(tmp_path / "bad.npz", ids=np.zeros((2, 4)))
    with pytest.raises(ConvertError, match=r"lacks arrays for inputs \['x'\]") as info:
        load_samples(tmp_path / "bad.npz", TWO)
    assert "numpy.savez(path, ids=..., x=...)" in str(info.value)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 7), np.float32), "wants"),
        (np.zeros((8,), np.float32), "rank"),
        (np.array([["a"] * 8]), "not numbers"),
    ],
)
def test_bad_arrays(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "s.npy", array)
    with pytest.raises(ConvertError, match=message):
        load_samples(tmp_path / "s.npy", ONE)


def test_unequal_counts_and_bad_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", ids=np.zeros((2, 4)), x=np.zeros((3, 2)))
    with pytest.raises(ConvertError, match="different or zero"):
        load_samples(tmp_path / "s.npz", TWO)
    with pytest.raises(ConvertError, match="does not exist"):
        load_samples(tmp_path / "missing.npz", ONE)
    (tmp_path / "s.csv").write_text("1,2\n")
    with pytest.raises(ConvertError, match=r"neither \.npz nor \.npy"):
        load_samples(tmp_path / "s.csv", ONE)


def test_synthetic_samples_follow_the_signature() -> None:
    samples = synthetic_samples(TWO, 6)
    assert samples.synthetic and samples.count == 6
    assert samples.arrays["ids"].dtype == np.int64 and samples.arrays["ids"].shape == (6, 4)
    assert samples.arrays["ids"].min() >= 0 and samples.arrays["ids"].max() <= 10
    assert samples.arrays["x"].dtype == np.float32 and samples.arrays["x"].shape == (6, 2)
    again = synthetic_samples(TWO, 6)
    np.testing.assert_array_equal(samples.arrays["x"], again.arrays["x"])  # seeded


def test_synthetic_needs_known_dimensions_and_numbers() -> None:
    images = SignatureMeta("p", {"img": TensorMeta("DT_FLOAT", [-1, -1, -1, 3])}, {})
    with pytest.raises(ConvertError, match="--samples"):
        synthetic_samples(images)
    text = SignatureMeta("p", {"s": TensorMeta("DT_STRING", [-1])}, {})
    with pytest.raises(ConvertError, match="DT_STRING"):
        synthetic_samples(text)
