"""Install a converted model.tflite as a new version of its model, so it deploys and rolls out
(canary included) like any other version.

The new folder holds a copy of the source SavedModel version and the model.tflite beside it:
TF Serving (and our server) with --prefer_tflite_model serve the .tflite, and without the flag
the same version still loads as the SavedModel, so the version is valid everywhere. It is written
beside the model as a hidden folder and renamed into place, so a file-system poll never sees it
half written; an existing version is never overwritten.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from orchestrator.convert.errors import ConvertError

TFLITE_FILE = "model.tflite"  # the name TF Serving looks for


def install_tflite(version_dir: Path, artifact: Path) -> Path:
    """Copy version_dir + artifact into BASE/<newest + 1>; returns the new version folder."""
    base = version_dir.parent
    versions = [int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir()]
    new = base / str(max(versions, default=0) + 1)
    tmp = base / f".tmp-tflite-{new.name}-{os.getpid()}"
    try:
        shutil.copytree(version_dir, tmp, ignore=shutil.ignore_patterns(TFLITE_FILE))
        shutil.copyfile(artifact, tmp / TFLITE_FILE)
        if new.exists():  # pragma: no cover - someone wrote the same version meanwhile
            raise ConvertError(
                f"{new} appeared while installing", format="tflite", fix="run the command again"
            )
        os.rename(tmp, new)
    except OSError as e:
        raise ConvertError(
            f"cannot install {artifact} into {base}: {e.strerror}",
            format="tflite",
            fix=f"make {base} writable, or copy {artifact} into a new version folder yourself",
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return new
