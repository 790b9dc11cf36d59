"""`tfsctl package`: a modelcar image (the version folders, no base image) for `image://` URIs.

The image holds `/models/NAME/<version>/...` and one static binary, `/bin/cp` (busybox, which
picks its applet from its name), because the pod's init container copies the model into an
emptyDir with `cp -R` and an image built FROM scratch has no shell or tools of its own.
Built through the Docker SDK from an in-memory context, so nothing is pulled; `push` is a
separate step that tests never run.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from orchestrator.errors import ModelError, RuntimeFailure
from orchestrator.spec import IMAGE_REF, Spec

DEFAULT_COPIER = Path("/bin/busybox")
COPIER_FIX = ("install a static busybox (`sudo apt-get install busybox-static`), or pass --copier "
              "with any statically linked busybox")


def dockerfile(name: str) -> str:
    return (
        "FROM scratch\n"
        "COPY cp /bin/cp\n"
        f"COPY models /models/{name}\n"
        "ENV PATH=/bin\n"
        "USER 1000:1000\n"
        f'LABEL io.tfso.managed-by="tfsctl" io.tfso.model="{name}"\n'
    )


def build_context(spec: Spec, copier: Path) -> tuple[bytes, list[int]]:
    """A tar build context: Dockerfile, the copier as `cp`, and every numbered version folder."""
    from orchestrator.savedmodel import list_versions

    versions = list_versions(spec.base_path) if spec.base_path.is_dir() else []
    if not versions:
        raise ModelError(
            f"{spec.base_path} holds no numbered version folders to package",
            fix=f"export one first (`tfsctl export model.keras --name {spec.name}`), or point "
            "base_path at models/NAME",
        )
    if not copier.is_file():
        raise RuntimeFailure(f"no static copier at {copier}", fix=COPIER_FIX)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        text = dockerfile(spec.name).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
        tar.add(str(copier), arcname="cp")
        for version in versions:
            tar.add(str(spec.base_path / str(version)), arcname=f"models/{version}")
    return buffer.getvalue(), versions


def _client():  # type: ignore[no-untyped-def]
    from orchestrator.runtime.docker.api import translate_error

    try:
        import docker
        from docker.utils import kwargs_from_env

        return docker.APIClient(version="auto", **kwargs_from_env())
    except ImportError as exc:
        raise RuntimeFailure("the Docker SDK is not installed",
                             fix="pip install 'tfserving-orchestrator[serve]'") from exc
    except Exception as exc:
        raise translate_error(exc, "connect to Docker") from exc


def check_ref(image: str) -> None:
    if not IMAGE_REF.fullmatch(image):
        raise RuntimeFailure(f"{image!r} is not an image reference with a tag",
                             fix="pass --image REGISTRY/REPO:TAG, e.g. registry.example.com/models/demo:1")


def build(spec: Spec, image: str, *, copier: Path = DEFAULT_COPIER) -> tuple[str, list[int]]:
    """Build the modelcar image tagged `image`; returns its id and the versions inside."""
    from orchestrator.runtime.docker.api import translate_error

    check_ref(image)
    context, versions = build_context(spec, copier)
    client = _client()
    image_id = None
    try:
        for chunk in client.build(fileobj=io.BytesIO(context), custom_context=True, tag=image, rm=True,
                                  forcerm=True, pull=False, decode=True):
            if "error" in chunk:
                raise RuntimeFailure(f"building {image} failed: {chunk['error'].strip()}",
                                     fix="check the model folder and that dockerd can build images")
            aux = chunk.get("aux") or {}
            image_id = aux.get("ID", image_id)
    except RuntimeFailure:
        raise
    except Exception as exc:
        raise translate_error(exc, f"build {image}") from exc
    return image_id or client.inspect_image(image)["Id"], versions


def push(image: str) -> None:
    """Push to the image's registry with the credentials `docker login` stored (never in tests)."""
    from orchestrator.runtime.docker.api import translate_error

    check_ref(image)
    repo, _, tag = image.rpartition(":")
    client = _client()
    try:
        for chunk in client.push(repo, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise RuntimeFailure(f"pushing {image} failed: {chunk['error'].strip()}",
                                     fix="`docker login` to the registry, and check the repository name")
    except RuntimeFailure:
        raise
    except Exception as exc:
        raise translate_error(exc, f"push {image}") from exc


__all__ = ["DEFAULT_COPIER", "build", "build_context", "dockerfile", "push"]
