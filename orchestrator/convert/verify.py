"""How far an artifact's answers are from the SavedModel's: pure numpy, no runtime here.

- max abs diff: over every output element (quantized outputs already dequantized);
- top-1 agreement: the share of samples whose argmax over the last axis is the same, for the
  first output that looks like class scores (rank >= 2, more than one class). Against the
  SavedModel's own predictions this is the accuracy delta without labels: 1.0 means the artifact
  would be exactly as accurate on these samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from orchestrator.convert.errors import ConvertError


@dataclass(frozen=True)
class OutputDiff:
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float | None


@dataclass(frozen=True)
class Comparison:
    outputs: dict[str, OutputDiff]
    max_abs_diff: float
    top1_agreement: float | None
    top1_output: str | None  # the output the agreement is measured on


@dataclass(frozen=True)
class Thresholds:
    max_abs_diff: float | None = None
    min_agreement: float | None = None

    def __post_init__(self) -> None:
        if self.max_abs_diff is not None and self.max_abs_diff < 0:
            raise ConvertError("--max-abs-diff must be zero or more")
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            raise ConvertError("--min-agreement is a share from 0 to 1 (e.g. 0.99)")

    def failures(self, comparison: Comparison) -> list[str]:
        found: list[str] = []
        if self.max_abs_diff is not None and not comparison.max_abs_diff <= self.max_abs_diff:
            found.append(
                f"max abs diff {comparison.max_abs_diff:.3g} > allowed {self.max_abs_diff:.3g}"
            )
        if self.min_agreement is not None:
            if comparison.top1_agreement is None:
                found.append("--min-agreement asked but no output has class scores to compare")
            elif comparison.top1_agreement < self.min_agreement:
                found.append(
                    f"top-1 agreement {comparison.top1_agreement:.4f} < required "
                    f"{self.min_agreement:.4f}"
                )
        return found


def is_class_scores(array: np.ndarray) -> bool:
    return array.ndim >= 2 and array.shape[-1] > 1 and array.dtype.kind == "f"


def compare_outputs(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]
) -> Comparison:
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise ConvertError(
            f"the artifact lacks outputs {missing} (it gives {sorted(candidate)})",
            fix="convert the same signature the SavedModel serves",
        )
    diffs: dict[str, OutputDiff] = {}
    top1_output = None
    for name, want in reference.items():
        got = np.asarray(candidate[name])
        want = np.asarray(want)
        if got.shape != want.shape:
            raise ConvertError(
                f"output {name!r} has shape {list(got.shape)}, the SavedModel's {list(want.shape)}"
            )
        if want.size == 0:
            diffs[name] = OutputDiff(0.0, 0.0, None)
            continue
        delta = np.abs(got.astype(np.float64) - want.astype(np.float64))
        agreement = None
        if is_class_scores(want):
            same = np.argmax(got, axis=-1) == np.argmax(want, axis=-1)
            agreement = float(np.mean(same))
            top1_output = top1_output or name
        diffs[name] = OutputDiff(float(np.max(delta)), float(np.mean(delta)), agreement)
    overall = max((d.max_abs_diff for d in diffs.values()), default=0.0)
    agreement = diffs[top1_output].top1_agreement if top1_output else None
    return Comparison(diffs, overall, agreement, top1_output)


@dataclass(frozen=True)
class Verdict:
    comparison: Comparison
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


__all__ = ["Comparison", "OutputDiff", "Thresholds", "Verdict", "compare_outputs", "is_class_scores"]
