"""What every format shares: the job it converts, the runner it is checked with, and timing.

A format is an object with `name`, `convert(job) -> Path` (the artifact: a file or a folder
inside `job.out_dir`) and `runner(artifact, job) -> Runner`. A runner answers a batch of samples
with float outputs keyed like the SavedModel signature's outputs (quantized outputs come back
dequantized), and times single examples itself so each runtime is measured the same way.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from orchestrator.convert.samples import Samples
from orchestrator.savedmodel import SignatureMeta

Arrays = dict[str, np.ndarray]
DEFAULT_LATENCY_RUNS = 20


@dataclass(frozen=True)
class ConvertJob:
    """One SavedModel signature to convert into one format folder."""

    saved_model_dir: Path
    signature_key: str
    signature: SignatureMeta
    out_dir: Path
    samples: Samples
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    outputs: Arrays
    latency_ms: float | None  # median of single-example calls after one warm-up
    runtime: str  # e.g. "ai-edge-litert 2.3.0"


class Runner(Protocol):
    def run(self, samples: Samples, latency_runs: int = DEFAULT_LATENCY_RUNS) -> RunResult: ...


class Format(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def tool(self) -> str:  # converter name and version, for the report
        ...

    def convert(self, job: ConvertJob) -> Path: ...

    def runner(self, artifact: Path, job: ConvertJob) -> Runner: ...


def median_latency_ms(
    predict: Callable[[Arrays], object], samples: Samples, runs: int
) -> float | None:
    """Median wall time of `predict` on single examples (the first `runs`), after a warm-up."""
    n = min(runs, samples.count)
    if n <= 0:
        return None
    predict(samples.example(0))
    times = []
    for i in range(n):
        example = samples.example(i)
        start = time.perf_counter()
        predict(example)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


class SavedModelRunner:
    """The reference: the SavedModel's own signature function, run by TensorFlow."""

    def __init__(self, saved_model_dir: Path, signature_key: str) -> None:
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(str(saved_model_dir))
        self._fn = self._loaded.signatures[signature_key]
        self.runtime = f"tensorflow {tf.__version__}"

    def predict(self, inputs: Arrays) -> Arrays:
        result = self._fn(**{k: self._tf.constant(v) for k, v in inputs.items()})
        return {k: np.asarray(v.numpy()) for k, v in result.items()}

    def run(self, samples: Samples, latency_runs: int = DEFAULT_LATENCY_RUNS) -> RunResult:
        outputs = self.predict(samples.arrays)
        return RunResult(outputs, median_latency_ms(self.predict, samples, latency_runs), self.runtime)


__all__ = [
    "DEFAULT_LATENCY_RUNS",
    "Arrays",
    "ConvertJob",
    "Format",
    "RunResult",
    "Runner",
    "SavedModelRunner",
    "median_latency_ms",
    "package_version",
]
