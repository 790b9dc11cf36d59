"""Kubernetes commands: `package` builds a modelcar image; `render --target kubernetes|kserve` writes manifests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml

if TYPE_CHECKING:
    from orchestrator.spec import Spec


class _Dumper(yaml.SafeDumper):
    """No `&id001` anchors: a reader (or kubectl diff) sees every value where it applies."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _dump(obj: object) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)


def manifest_files(specs: list[Spec], target: str, *, canary_version: int | None = None,
                   canary_weight: int = 0) -> dict[str, str]:
    """File name → YAML text: one object per file, plus kustomization.yaml for GitOps."""
    from orchestrator.kube import manifests

    files: dict[str, str] = {}
    for spec in specs:
        if target == "kserve":
            objects = [manifests.inference_service(
                spec, canary_traffic_percent=canary_weight if canary_version is not None else None)]
        else:
            objects = manifests.render(spec, canary_version=canary_version, canary_weight=canary_weight)
        for obj in objects:
            meta = obj["metadata"]
            files[f"{meta['name']}.{obj['kind'].lower()}.yaml"] = _dump(obj)
    namespaces = {s.kubernetes.namespace for s in specs}
    kustomization: dict[str, object] = {"apiVersion": "kustomize.config.k8s.io/v1beta1",
                                        "kind": "Kustomization"}
    if len(namespaces) == 1:
        kustomization["namespace"] = namespaces.pop()
    kustomization["resources"] = list(files)
    files["kustomization.yaml"] = _dump(kustomization)
    return files


def write_manifests(specs: list[Spec], target: str, out: Path, *, canary_version: int | None,
                    canary_weight: int) -> list[Path]:
    from orchestrator.cli._common import write_output

    files = manifest_files(specs, target, canary_version=canary_version, canary_weight=canary_weight)
    write_output(out, files)
    return [out / name for name in files]


@click.command()
@click.argument("name")
@click.option("--image", "image", required=True, help="REGISTRY/REPO:TAG of the image to build.")
@click.option("--push", "push_after", is_flag=True, help="Push it after building (needs `docker login`).")
@click.option("--copier", type=click.Path(path_type=Path), default=None,
              help="A static busybox to put in the image as /bin/cp (default: /bin/busybox).")
@click.option("--configs-dir", type=click.Path(path_type=Path), default=Path("serving_configs"),
              show_default=True, help="Folder of deployment specs.")
def package(name: str, image: str, push_after: bool, copier: Path | None, configs_dir: Path) -> None:
    """Build a modelcar image from the spec's models folder, for `model_uri: image://REPO:TAG`."""
    from orchestrator.cli._common import console
    from orchestrator.kube import package as modelcar
    from orchestrator.spec import load_spec

    spec = load_spec(name, configs_dir=configs_dir, check_files=False)
    with console.status(f"building {image} from {spec.base_path}…"):
        image_id, versions = modelcar.build(spec, image, copier=copier or modelcar.DEFAULT_COPIER)
    console.print(f"built {image} ({image_id[:19]}) with versions {versions}")
    if push_after:
        with console.status(f"pushing {image}…"):
            modelcar.push(image)
        console.print(f"pushed {image}")
    console.print(f"use it with `model_uri: image://{image}`", highlight=False)


COMMANDS = [package]
