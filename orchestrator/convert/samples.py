"""The inputs every artifact is checked on: a user's samples file, or synthetic ones made from
the signature (with a loud warning, since random inputs say little about real accuracy).

Samples are a dict of numpy arrays keyed by the signature's input names, all with the same
leading batch dimension. Only numpy is imported here; dtypes come as TF enum names
(`DT_FLOAT`), as `orchestrator.savedmodel` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.convert.errors import ConvertError
from orchestrator.savedmodel import SignatureMeta, TensorMeta, inspect_version

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_SYNTHETIC_COUNT = 32

# TF DataType names -> numpy dtypes, for the types a SavedModel signature usually carries.
NUMPY_DTYPES: dict[str, type[np.generic]] = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_HALF": np.float16,
    "DT_INT8": np.int8,
    "DT_INT16": np.int16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT8": np.uint8,
    "DT_UINT16": np.uint16,
    "DT_BOOL": np.bool_,
}


@dataclass(frozen=True)
class Samples:
    """Named input arrays with one shared batch dimension, and where they came from."""

    arrays: dict[str, np.ndarray]
    source: str  # "file:<path>" or "synthetic"

    @property
    def count(self) -> int:
        return len(next(iter(self.arrays.values())))

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def example(self, i: int) -> dict[str, np.ndarray]:
        """The i-th sample as a batch of one."""
        return {k: v[i : i + 1] for k, v in self.arrays.items()}

    def head(self, n: int) -> Samples:
        return Samples({k: v[:n] for k, v in self.arrays.items()}, self.source)


def read_signature(saved_model_dir: Path, signature: str = DEFAULT_SIGNATURE) -> SignatureMeta:
    """The named signature of a SavedModel folder; ConvertError lists the ones there are."""
    info = inspect_version(Path(saved_model_dir), version=0)
    if info.error:
        raise ConvertError(
            f"{saved_model_dir}: {info.error}", fix="point at a servable SavedModel version folder"
        )
    if signature not in info.signatures:
        raise ConvertError(
            f"{saved_model_dir}: no signature {signature!r} (there are: "
            f"{', '.join(info.signatures) or 'none'})",
            fix="pass --signature with one of those names",
        )
    return info.signatures[signature]


def numpy_dtype(meta: TensorMeta, name: str) -> type[np.generic]:
    try:
        return NUMPY_DTYPES[meta.dtype]
    except KeyError:
        raise ConvertError(
            f"input {name!r} has dtype {meta.dtype}, which the converters checked here do not take",
            fix="convert a signature with numeric inputs (e.g. export a serving function that "
            "takes the preprocessed tensors)",
        ) from None


def _check_shape(name: str, array: np.ndarray, meta: TensorMeta, source: str) -> None:
    if meta.shape is None:
        return
    if array.ndim != len(meta.shape):
        raise ConvertError(
            f"{source}: input {name!r} has shape {list(array.shape)}, the signature wants rank "
            f"{len(meta.shape)} {meta.shape} (first dimension: the samples)",
            fix="save one batch per input with the samples along the first axis",
        )
    for got, want in zip(array.shape[1:], meta.shape[1:], strict=True):
        if want != -1 and got != want:
            raise ConvertError(
                f"{source}: input {name!r} has shape {list(array.shape)}, the signature wants "
                f"{meta.shape}",
                fix="reshape the samples to the signature's shape",
            )


def load_samples(path: Path, signature: SignatureMeta) -> Samples:
    """Read `.npz` (one array per input name) or `.npy` (one array, single-input models)."""
    path = Path(path)
    source = f"file:{path}"
    if not path.is_file():
        raise ConvertError(f"samples file {path} does not exist", fix="pass an existing .npz or .npy")
    names = list(signature.inputs)
    try:
        if path.suffix == ".npy":
            loaded = {"": np.load(path, allow_pickle=False)}
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                loaded = {k: npz[k] for k in npz.files}
        else:
            raise ConvertError(
                f"samples file {path} is neither .npz nor .npy",
                fix="save samples with numpy.savez(path, **{input_name: array})",
            )
    except (OSError, ValueError) as exc:
        raise ConvertError(f"cannot read samples {path}: {exc}", fix="re-save it with numpy") from exc

    if set(names) <= set(loaded):
        arrays = {n: loaded[n] for n in names}
    elif len(names) == 1 and len(loaded) == 1:
        arrays = {names[0]: next(iter(loaded.values()))}
    else:
        missing = sorted(set(names) - set(loaded))
        raise ConvertError(
            f"{path} lacks arrays for inputs {missing} (it has {sorted(k for k in loaded if k)})",
            fix="save one array per signature input: numpy.savez(path, "
            + ", ".join(f"{n}=..." for n in names)
            + ")",
        )
    out: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        meta = signature.inputs[name]
        dtype = numpy_dtype(meta, name)
        if array.dtype.kind not in "biuf":
            raise ConvertError(f"{path}: input {name!r} holds {array.dtype}, not numbers")
        _check_shape(name, array, meta, str(path))
        out[name] = np.ascontiguousarray(array.astype(dtype, copy=False))
    counts = {n: len(a) for n, a in out.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise ConvertError(
            f"{path}: inputs hold different or zero sample counts {counts}",
            fix="give every input the same number of samples along the first axis",
        )
    return Samples(out, source)


def synthetic_samples(
    signature: SignatureMeta, count: int = DEFAULT_SYNTHETIC_COUNT, *, seed: int = 0
) -> Samples:
    """Random inputs shaped like the signature: normal floats, small integers, random booleans."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for name, meta in signature.inputs.items():
        dtype = numpy_dtype(meta, name)
        dims = meta.shape
        if dims is None or any(d == -1 for d in dims[1:]):
            raise ConvertError(
                f"input {name!r} has shape {dims}: synthetic samples need every dimension but "
                "the first known",
                fix="pass --samples FILE.npz with real inputs",
            )
        shape = (count, *dims[1:])
        if np.issubdtype(dtype, np.floating):
            arrays[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            arrays[name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            info = np.iinfo(np.dtype(dtype))
            arrays[name] = rng.integers(max(info.min, 0), min(info.max, 10), shape, endpoint=True).astype(dtype)
    return Samples(arrays, "synthetic")


SYNTHETIC_WARNING = (
    "NO SAMPLES GIVEN: using random inputs made from the signature. Agreement on random inputs "
    "says little about accuracy on real data, and an INT8 model calibrated on them can be badly "
    "off. Pass --samples FILE.npz with real inputs."
)

__all__ = [
    "DEFAULT_SIGNATURE",
    "DEFAULT_SYNTHETIC_COUNT",
    "SYNTHETIC_WARNING",
    "Samples",
    "load_samples",
    "numpy_dtype",
    "read_signature",
    "synthetic_samples",
]
