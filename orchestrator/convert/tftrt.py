"""TF-TRT: a SavedModel whose supported subgraphs run as TensorRT engines (FP32 or FP16).

Every TensorFlow wheel on PyPI for 2.21 is built without TensorRT
(`tf.sysconfig.get_build_info()["is_tensorrt_build"]` is False), so on a plain install this format
stops with an error that says so and where to run it instead: an NVIDIA build of TensorFlow (the
NVIDIA NGC TensorFlow container) on a machine with an NVIDIA GPU and TensorRT. There the same
command converts, builds engines on the samples, and checks the result with TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.convert.base import ConvertJob, SavedModelRunner, package_version
from orchestrator.convert.errors import ConvertError

PRECISIONS = ("FP32", "FP16")
DEFAULT_WORKSPACE_BYTES = 1 << 30
DEFAULT_MIN_SEGMENT_SIZE = 3
NOT_BUILT_FIX = (
    "run this conversion where TensorFlow is built with TensorRT: NVIDIA's TensorFlow container "
    "from NGC (nvidia/tensorflow) on a machine with an NVIDIA GPU, or a TensorFlow you build "
    "with TF_NEED_TENSORRT=1. For CPU/edge targets use tflite or onnx; for TensorRT itself, "
    "convert to onnx here and build an engine with trtexec on the GPU machine."
)


@dataclass(frozen=True)
class TrtOptions:
    precision: str = "FP32"
    max_workspace_size_bytes: int = DEFAULT_WORKSPACE_BYTES
    minimum_segment_size: int = DEFAULT_MIN_SEGMENT_SIZE
    build_engines: bool = True  # build engines on the samples now, not at the first request

    def __post_init__(self) -> None:
        precision = self.precision.upper()
        if precision not in PRECISIONS:
            raise ConvertError(
                f"TF-TRT precision {self.precision!r} is not one of {', '.join(PRECISIONS)}",
                format="tftrt",
                fix="use FP32 or FP16 (INT8 calibration is left to TensorRT tooling)",
            )
        object.__setattr__(self, "precision", precision)
        if self.max_workspace_size_bytes <= 0 or self.minimum_segment_size <= 0:
            raise ConvertError("TF-TRT workspace size and minimum segment size must be positive",
                               format="tftrt")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], fmt: str) -> TrtOptions:
        default = "FP16" if fmt.endswith("fp16") else "FP32"
        return cls(
            precision=str(options.get("trt_precision") or default),
            max_workspace_size_bytes=int(options.get("trt_workspace_bytes", DEFAULT_WORKSPACE_BYTES)),
            minimum_segment_size=int(options.get("trt_min_segment_size", DEFAULT_MIN_SEGMENT_SIZE)),
        )

    def conversion_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `trt_convert.TrtConversionParams`."""
        return {
            "precision_mode": self.precision,
            "max_workspace_size_bytes": self.max_workspace_size_bytes,
            "minimum_segment_size": self.minimum_segment_size,
        }


def tensorrt_build_info(build_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    if build_info is None:
        import tensorflow as tf

        build_info = tf.sysconfig.get_build_info()
    return {
        "is_tensorrt_build": bool(build_info.get("is_tensorrt_build", False)),
        "tensorrt_version": build_info.get("tensorrt_version"),
        "cuda_version": build_info.get("cuda_version"),
    }


def require_tensorrt(build_info: Mapping[str, Any] | None = None, fmt: str = "tftrt") -> None:
    info = tensorrt_build_info(build_info)
    if not info["is_tensorrt_build"]:
        raise ConvertError(
            f"this TensorFlow ({package_version('tensorflow')}) is built without TensorRT "
            '(tf.sysconfig.get_build_info()["is_tensorrt_build"] is False, as for every '
            "TensorFlow wheel on PyPI)",
            format=fmt,
            fix=NOT_BUILT_FIX,
        )


def _trt_convert_module() -> Any:
    from tensorflow.python.compiler.tensorrt import trt_convert

    return trt_convert


@dataclass(frozen=True)
class TftrtFormat:
    name: str = "tftrt"
    build_info: Mapping[str, Any] | None = None  # None: ask TensorFlow; tests pass their own
    trt_module: Any = None  # None: tensorflow's trt_convert; tests pass a fake

    @property
    def tool(self) -> str:
        return f"tensorflow {package_version('tensorflow')} TF-TRT"

    def convert(self, job: ConvertJob) -> Path:
        options = TrtOptions.from_options(job.options, self.name)
        require_tensorrt(self.build_info, self.name)
        trt = self.trt_module or _trt_convert_module()
        params = trt.TrtConversionParams(**options.conversion_kwargs())
        converter = trt.TrtGraphConverterV2(
            input_saved_model_dir=str(job.saved_model_dir),
            input_saved_model_signature_key=job.signature_key,
            conversion_params=params,
        )
        try:
            converter.convert()
            if options.build_engines and job.samples.count:
                samples = job.samples

                def input_fn() -> Any:
                    for i in range(min(samples.count, 8)):
                        yield samples.example(i)

                converter.build(input_fn=input_fn)
            converter.save(str(job.out_dir))
        except ConvertError:
            raise
        except Exception as exc:
            raise ConvertError(
                f"TF-TRT conversion failed: {type(exc).__name__}: {str(exc).strip()[:2000]}",
                format=self.name,
                fix="check that a GPU is visible (nvidia-smi) and TensorRT matches this build",
            ) from exc
        return job.out_dir

    def runner(self, artifact: Path, job: ConvertJob) -> SavedModelRunner:
        return SavedModelRunner(artifact, job.signature_key)


__all__ = ["PRECISIONS", "TftrtFormat", "TrtOptions", "require_tensorrt", "tensorrt_build_info"]
