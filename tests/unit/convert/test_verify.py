from __future__ import annotations

import numpy as np
import pytest

from orchestrator.convert import ConvertError, Thresholds, compare_outputs
from orchestrator.convert.verify import is_class_scores

REF = {"probs": np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)}


def test_identical_outputs() -> None:
    c = compare_outputs(REF, {"probs": REF["probs"].copy()})
    assert c.max_abs_diff == 0.0
    assert c.top1_agreement == 1.0
    assert c.top1_output == "probs"


def test_diff_and_flipped_top1() -> None:
    got = np.array([[0.2, 0.7, 0.1], [0.1, 0.3, 0.6]], np.float32)
    c = compare_outputs(REF, {"probs": got})
    assert c.max_abs_diff == pytest.approx(0.5)
    assert c.top1_agreement == 0.5
    assert c.outputs["probs"].mean_abs_diff == pytest.approx(1.0 / 6, rel=1e-5)


def test_regression_output_has_no_agreement() -> None:
    ref = {"y": np.array([[1.0], [2.0]], np.float32)}
    c = compare_outputs(ref, {"y": np.array([[1.5], [2.0]], np.float32)})
    assert c.top1_agreement is None and c.top1_output is None
    assert c.max_abs_diff == 0.5


def test_extra_outputs_are_ignored_missing_and_misshaped_are_errors() -> None:
    assert compare_outputs(REF, {**REF, "extra": np.zeros(1)}).max_abs_diff == 0.0
    with pytest.raises(ConvertError, match="lacks outputs"):
        compare_outputs(REF, {"other": REF["probs"]})
    with pytest.raises(ConvertError, match="shape"):
        compare_outputs(REF, {"probs": REF["probs"][:1]})


def test_class_scores_detection() -> None:
    assert is_class_scores(np.zeros((2, 3), np.float32))
    assert not is_class_scores(np.zeros((2, 1), np.float32))
    assert not is_class_scores(np.zeros((3,), np.float32))
    assert not is_class_scores(np.zeros((2, 3), np.int64))


def test_thresholds() -> None:
    got = np.array([[0.2, 0.7, 0.1], [0.1, 0.3, 0.6]], np.float32)
    c = compare_outputs(REF, {"probs": got})
    assert Thresholds().failures(c) == []
    assert Thresholds(max_abs_diff=0.5, min_agreement=0.5).failures(c) == []
    failures = Thresholds(max_abs_diff=0.1, min_agreement=0.9).failures(c)
    assert len(failures) == 2
    assert "max abs diff 0.5 > allowed 0.1" in failures[0]
    assert "0.5000 < required 0.9000" in failures[1]


def test_nan_output_fails_any_diff_threshold() -> None:
    got = np.array([[np.nan, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
    c = compare_outputs(REF, {"probs": got})
    assert Thresholds(max_abs_diff=10.0).failures(c)


def test_agreement_threshold_needs_class_scores() -> None:
    ref = {"y": np.array([[1.0]], np.float32)}
    c = compare_outputs(ref, ref)
    assert "no output has class scores" in Thresholds(min_agreement=0.9).failures(c)[0]


@pytest.mark.parametrize("kwargs", [{"max_abs_diff": -1.0}, {"min_agreement": 1.5}])
def test_threshold_values_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConvertError):
        Thresholds(**kwargs)
