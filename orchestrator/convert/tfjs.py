"""TF.js graph models (float32, float16 or uint8 weights), checked with @tensorflow/tfjs in Node.

Installing `tensorflowjs==4.22.0` beside TF 2.21: its dependency on tensorflow-decision-forests
pins TF 2.19, so it is installed with `--no-deps` plus the few packages the SavedModel converter
really uses (tf-keras, six, importlib_resources, packaging). At import it also loads modules this
path does not need: `tensorflow_decision_forests` (registers TF-DF ops, for forest models only),
`tensorflow_hub` (for TF Hub modules; 0.16.1 fails to import without setuptools' pkg_resources)
and JAX (its `convert_jax`). `import_saved_model_converter()` lets each of those load when it can
and otherwise stands a placeholder in for the import only, so `tf_saved_model` -> graph model
works without them.
"""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.convert import node
from orchestrator.convert.base import DEFAULT_LATENCY_RUNS, ConvertJob, RunResult, package_version
from orchestrator.convert.errors import ConvertError
from orchestrator.convert.samples import Samples

RUNNER_SCRIPT = Path(__file__).with_name("tfjs_runner.cjs")
RUN_TIMEOUT_S = 300.0
# format name -> tensorflowjs quantization_dtype_map (weights only; activations stay float32)
QUANTIZATION: dict[str, dict[str, Any] | None] = {
    "tfjs": None,
    "tfjs-f16": {"float16": "*"},
    "tfjs-uint8": {"uint8": "*"},
}
DEPS_FIX = (
    "install the conversion tools: scripts/install_convert_deps.sh "
    "(pip install --no-deps tensorflowjs==4.22.0 plus tf-keras==2.21.0)"
)
_OPTIONAL_MODULES = ("tensorflow_decision_forests", "tensorflow_hub")
_JAX_MODULE = "tensorflowjs.converters.jax_conversion"


def _placeholder(name: str, reason: str) -> types.ModuleType:
    module = types.ModuleType(name, f"placeholder set by orchestrator.convert.tfjs: {reason}")
    module.__dict__["__orchestrator_placeholder__"] = True
    return module


def _convert_jax_unavailable(*_args: Any, **_kwargs: Any) -> None:
    raise ConvertError("the JAX converter of tensorflowjs is not loaded here", format="tfjs")


def import_saved_model_converter() -> Any:
    """`tensorflowjs.converters.tf_saved_model_conversion_v2`, without TF-DF, TF Hub or JAX."""
    if "tensorflowjs.converters.tf_saved_model_conversion_v2" in sys.modules:
        return sys.modules["tensorflowjs.converters.tf_saved_model_conversion_v2"]
    placed: list[str] = []
    for name in _OPTIONAL_MODULES:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # not installed, or built for another TF: not needed for this path
            sys.modules[name] = _placeholder(name, "not needed for tf_saved_model conversion")
            placed.append(name)
    if _JAX_MODULE not in sys.modules:
        jax_stub = _placeholder(_JAX_MODULE, "JAX conversion is not used")
        jax_stub.__dict__["convert_jax"] = _convert_jax_unavailable
        sys.modules[_JAX_MODULE] = jax_stub
    try:
        return importlib.import_module("tensorflowjs.converters.tf_saved_model_conversion_v2")
    except ImportError as exc:
        raise ConvertError(
            f"cannot import the tensorflowjs converter: {exc}", format="tfjs", fix=DEPS_FIX
        ) from exc
    finally:
        # The converter keeps its own references; do not let placeholders mislead other code.
        for name in placed:
            sys.modules.pop(name, None)


@dataclass(frozen=True)
class TfjsFormat:
    name: str  # a key of QUANTIZATION

    @property
    def tool(self) -> str:
        return f"tensorflowjs {package_version('tensorflowjs')}"

    def convert(self, job: ConvertJob) -> Path:
        converter = import_saved_model_converter()
        try:
            converter.convert_tf_saved_model(
                str(job.saved_model_dir),
                str(job.out_dir),
                signature_def=job.signature_key,
                saved_model_tags="serve",
                quantization_dtype_map=QUANTIZATION[self.name],
            )
        except ConvertError:
            raise
        except Exception as exc:  # ValueError for unsupported ops, and whatever TF raises
            raise ConvertError(
                f"tensorflowjs conversion failed: {type(exc).__name__}: {str(exc).strip()[:2000]}",
                format=self.name,
                fix="ops TF.js lacks are named above; simplify the serving signature",
            ) from exc
        artifact = job.out_dir / "model.json"
        if not artifact.is_file():
            raise ConvertError(f"the converter wrote no {artifact}", format=self.name)
        return job.out_dir

    def runner(self, artifact: Path, job: ConvertJob) -> TfjsNodeRunner:
        return TfjsNodeRunner(artifact, fmt=self.name)


def _encode(array: np.ndarray) -> dict[str, Any]:
    dtype = "float32" if array.dtype.kind == "f" else "bool" if array.dtype.kind == "b" else "int32"
    return {"dtype": dtype, "shape": list(array.shape), "data": array.astype(dtype).ravel().tolist()}


class TfjsNodeRunner:
    """Runs a graph model in Node with @tensorflow/tfjs (pure JS, CPU backend)."""

    def __init__(self, model_dir: Path, *, fmt: str = "tfjs") -> None:
        self.model_dir = model_dir
        self.fmt = fmt
        node.require_node(fmt)
        self.runtime = f"@tensorflow/tfjs {node.installed_version('@tensorflow/tfjs')} (node, cpu)"

    def run(self, samples: Samples, latency_runs: int = DEFAULT_LATENCY_RUNS) -> RunResult:
        request = {
            "model_dir": str(self.model_dir),
            "inputs": {k: _encode(v) for k, v in samples.arrays.items()},
            "latency_runs": latency_runs,
        }
        answer = node.run_node_json(RUNNER_SCRIPT, request, timeout_s=RUN_TIMEOUT_S, fmt=self.fmt)
        outputs = {
            k: np.asarray(v["data"], dtype=np.float32 if v["dtype"] == "float32" else None).reshape(
                v["shape"]
            )
            for k, v in answer["outputs"].items()
        }
        times = answer.get("latency_ms") or []
        latency = float(np.median(times)) if times else None
        return RunResult(outputs, latency, self.runtime)


__all__ = ["QUANTIZATION", "TfjsFormat", "TfjsNodeRunner", "import_saved_model_converter"]
