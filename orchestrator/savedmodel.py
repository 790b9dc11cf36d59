"""SavedModel folders: list versions, read signatures, and export models into a base path.

Inspection parses `saved_model.pb` instead of loading the model, as `saved_model_cli` does:
it is fast, needs no session, and reads TF1 graphs and TF2/Keras 3 exports alike. A version
that cannot be served is reported with its reason, and the other versions are still listed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ModelError
from orchestrator.names import NAME_PATTERN

SERVE_TAG = "serve"


def version_dirs(base_path: Path) -> dict[int, Path]:
    """Numbered version folders by version, ascending; `00000123` is version 123, as in TF Serving."""
    try:
        entries = list(Path(base_path).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found = {int(p.name): p for p in entries if p.name.isdigit() and p.is_dir()}
    return dict(sorted(found.items()))


def list_versions(base_path: Path) -> list[int]:
    """Numbered version folders under a base path, ascending (what TF Serving considers)."""
    return list(version_dirs(base_path))


@dataclass(frozen=True)
class TensorMeta:
    dtype: str
    shape: list[int] | None  # None: unknown rank; -1: unknown dimension


@dataclass(frozen=True)
class SignatureMeta:
    method_name: str
    inputs: dict[str, TensorMeta]
    outputs: dict[str, TensorMeta]


@dataclass(frozen=True)
class VersionInfo:
    version: int
    path: str
    signatures: dict[str, SignatureMeta] = field(default_factory=dict)
    error: str | None = None

    @property
    def servable(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["servable"] = self.servable
        return data


def _tensor_meta(info: Any) -> TensorMeta:
    from orchestrator.protos import tensor_pb2

    shape = info.tensor_shape
    dims = None if shape.unknown_rank else [int(d.size) for d in shape.dim]
    return TensorMeta(dtype=tensor_pb2.DataType.Name(info.dtype), shape=dims)


def read_saved_model(version_dir: Path) -> Any:
    """Parse tags, saver and signatures of saved_model.pb (or .pbtxt); ModelError says why not.

    Reads our header message (TF's field numbers, the graph left as bytes), so inspecting
    costs milliseconds and never imports TensorFlow; only the rare .pbtxt form needs TF.
    """
    from google.protobuf import message

    from orchestrator.protos import saved_model_pb2

    pb, pbtxt = version_dir / "saved_model.pb", version_dir / "saved_model.pbtxt"
    proto = saved_model_pb2.SavedModelHeader()
    try:
        if pb.is_file():
            proto.ParseFromString(pb.read_bytes())
        elif pbtxt.is_file():
            from google.protobuf import text_format
            from tensorflow.core.protobuf import saved_model_pb2 as tf_saved_model_pb2

            full = text_format.Parse(pbtxt.read_text(), tf_saved_model_pb2.SavedModel())
            proto.ParseFromString(full.SerializeToString())
        else:
            present = sorted(p.name for p in version_dir.iterdir())[:8] if version_dir.is_dir() else []
            raise ModelError(
                f"{version_dir}: no saved_model.pb or saved_model.pbtxt (found: {present or 'nothing'})",
                fix="export a SavedModel into this folder (tfsctl export), or remove the folder",
            )
    except (message.DecodeError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"{version_dir}: saved_model file is corrupt ({type(exc).__name__}: {exc})",
            fix="re-export this version; a truncated copy is the usual cause",
        ) from exc
    except Exception as exc:  # text_format.ParseError, without importing it up front
        if type(exc).__name__ != "ParseError":
            raise
        raise ModelError(f"{version_dir}: saved_model.pbtxt is corrupt ({exc})",
                         fix="re-export this version") from exc
    if not proto.meta_graphs:
        raise ModelError(f"{version_dir}: saved_model file holds no MetaGraph (corrupt or empty)",
                         fix="re-export this version")
    return proto


def inspect_version(version_dir: Path, version: int | None = None) -> VersionInfo:
    """Signatures of one SavedModel folder; `version` defaults to the folder's number."""
    version = int(version_dir.name) if version is None else version
    try:
        proto = read_saved_model(version_dir)
    except ModelError as exc:
        return VersionInfo(version, str(version_dir), error=exc.message)
    graphs = [mg for mg in proto.meta_graphs if SERVE_TAG in mg.meta_info_def.tags]
    if not graphs:
        tags = [list(mg.meta_info_def.tags) for mg in proto.meta_graphs]
        return VersionInfo(
            version, str(version_dir), error=f"no MetaGraph tagged 'serve' (tags found: {tags})"
        )
    graph = graphs[0]
    signatures = {
        key: SignatureMeta(
            method_name=sig.method_name,
            inputs={k: _tensor_meta(v) for k, v in sorted(sig.inputs.items())},
            outputs={k: _tensor_meta(v) for k, v in sorted(sig.outputs.items())},
        )
        for key, sig in sorted(graph.signature_def.items())
        if key != "__saved_model_init_op"
    }
    error = None
    if graph.saver_def.filename_tensor_name and not (
        version_dir / "variables" / "variables.index"
    ).is_file():
        error = "the graph has variables but variables/variables.index is missing"
    elif not signatures:
        error = "no signature_def: TF Serving could load it but no request could call it"
    return VersionInfo(version, str(version_dir), signatures=signatures, error=error)


def inspect_model(base_path: Path) -> list[VersionInfo]:
    base_path = Path(base_path)
    if not base_path.is_dir():
        raise ModelError(
            f"model base path {str(base_path)!r} does not exist",
            fix="pass the folder that holds numbered version folders (e.g. models/demo)",
        )
    versions = version_dirs(base_path)
    if not versions:
        if (base_path / "saved_model.pb").is_file():
            raise ModelError(
                f"{base_path} is a SavedModel itself, not a base path with version folders",
                fix=f"TF Serving needs <base>/<version>/saved_model.pb: move it into {base_path}/1/ "
                f"or run `tfsctl export {base_path} --name NAME`",
            )
        raise ModelError(
            f"{base_path} has no numbered version folder",
            fix="TF Serving loads <base_path>/<version>/; export one with `tfsctl export`",
        )
    return [inspect_version(path, version) for version, path in versions.items()]


# ---------------------------------------------------------------------------------------------
# Export


def _next_version(base: Path, version: int | None) -> int:
    found = list_versions(base)
    if version is None:
        return (found[-1] + 1) if found else 1
    if version < 1:
        raise ModelError(f"version {version} is not valid", fix="versions are whole numbers ≥ 1")
    return version


def _check_serving_signature(saved_model_dir: Path) -> None:
    info = inspect_version(saved_model_dir, version=0)
    if info.error:
        raise ModelError(f"{saved_model_dir} is not servable: {info.error}")


def export_model(
    source: Path, *, name: str, models_dir: Path = Path("models"), version: int | None = None
) -> Path:
    """Write SOURCE (.keras, .h5 or a SavedModel folder) as models_dir/NAME/<version>/.

    The new version appears atomically (written beside, then renamed), so a polling
    TF Serving never sees half a model, and an existing version is never overwritten.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ModelError(
            f"{name!r} is not a valid model name", fix="use letters, digits and _ only"
        )
    source = Path(source)
    if not source.exists():
        raise ModelError(f"{source} does not exist", fix="pass a .keras, .h5 or SavedModel folder")
    base = Path(models_dir) / name
    number = _next_version(base, version)
    target = base / str(number)
    if target.exists():
        raise ModelError(
            f"{target} already exists; versions are never overwritten",
            fix=f"omit --version to write the next free one ({_next_version(base, None)})",
        )
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{number}.tmp-", dir=base))
    try:
        out = staging / "model"
        if source.is_dir():
            if list_versions(source) and not (source / "saved_model.pb").exists():
                raise ModelError(
                    f"{source} is a base path with version folders, not one SavedModel",
                    fix=f"pass one version folder, e.g. {source}/{list_versions(source)[-1]}",
                )
            _check_serving_signature(source)
            shutil.copytree(source, out)
        elif source.suffix in (".keras", ".h5", ".hdf5"):
            _export_keras(source, out)
        else:
            raise ModelError(
                f"{source}: unknown model format {source.suffix!r}",
                fix="pass a Keras 3 .keras file, a legacy .h5 file or a SavedModel folder",
            )
        os.replace(out, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _export_keras(source: Path, out: Path) -> None:
    import keras

    try:
        model = keras.saving.load_model(source, compile=False)
    except Exception as exc:  # keras raises many types for bad files
        raise ModelError(
            f"{source}: Keras could not load it ({type(exc).__name__}: {exc})",
            fix="check the file was saved with model.save(); custom layers need their code importable",
        ) from exc
    _export_keras_model(model, out)


def _export_keras_model(model: Any, out: Path) -> None:
    """Keras 3's export writes a SavedModel with a `serving_default` signature."""
    model.export(str(out), format="tf_saved_model", verbose=False)


def example_instances(version_dir: Path, signature: str = "serving_default") -> list[Any] | None:
    """A row-format `instances` list that fits the signature (for the curl line users copy)."""
    info = inspect_version(version_dir, version=0)
    sig = info.signatures.get(signature)
    if info.error or sig is None or len(sig.inputs) != 1:
        return None
    meta = next(iter(sig.inputs.values()))
    if meta.shape is None or meta.dtype not in ("DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_INT64", "DT_HALF"):
        return None
    row: Any = 1.0 if meta.dtype in ("DT_FLOAT", "DT_DOUBLE", "DT_HALF") else 1
    for dim in reversed(meta.shape[1:]):
        if dim < 1 or dim > 16:
            return None
        row = [row] * dim
    return [row]
