"""Model commands: inspect a base path, export a model into one, build the demo model."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.cli._common import console, output_option, print_json, print_table


def _shape(shape: list[int] | None) -> str:
    return "?" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@output_option
def inspect(path: Path, output: str) -> None:
    """Versions and signatures of a model base path (exit 1 if no version is servable)."""
    with console.status("reading SavedModels…"):
        from orchestrator.savedmodel import inspect_model

        versions = inspect_model(path)
    if output == "json":
        print_json({"base_path": str(path), "versions": [v.to_json() for v in versions]})
    else:
        rows = []
        for v in versions:
            if v.error:
                rows.append((v.version, "-", "-", "-", "-", f"[not servable] {v.error}"))
            for key, sig in v.signatures.items():
                ins = ", ".join(f"{n}:{t.dtype}{_shape(t.shape)}" for n, t in sig.inputs.items())
                outs = ", ".join(f"{n}:{t.dtype}{_shape(t.shape)}" for n, t in sig.outputs.items())
                rows.append((v.version, key, sig.method_name, ins, outs, "ok" if not v.error else v.error))
        print_table(str(path), ["VERSION", "SIGNATURE", "METHOD", "INPUTS", "OUTPUTS", "STATUS"], rows)
    if not any(v.servable for v in versions):
        sys.exit(1)


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Model name (letters, digits, _).")
@click.option("--version", type=int, default=None, help="Version number (default: next free).")
@click.option("--models-dir", type=click.Path(path_type=Path), default=Path("models"), show_default=True)
def export(source: Path, name: str, version: int | None, models_dir: Path) -> None:
    """Export a .keras, .h5 or SavedModel into MODELS_DIR/NAME/<version>/."""
    with console.status(f"exporting {source}…"):
        from orchestrator.savedmodel import export_model

        target = export_model(source, name=name, models_dir=models_dir, version=version)
    console.print(f"exported {source} → [bold]{target}[/]")


@click.command("demo-model")
@click.option("--models-dir", type=click.Path(path_type=Path), default=Path("models"), show_default=True)
@click.option("--configs-dir", type=click.Path(path_type=Path), default=Path("serving_configs"), show_default=True)
@click.option("--force", is_flag=True, help="Rebuild versions that exist.")
def demo_model(models_dir: Path, configs_dir: Path, force: bool) -> None:
    """Build the demo Keras classifier as versions 1 and 2 under MODELS_DIR/demo."""
    with console.status("training the demo model (versions 1 and 2)…"):
        from orchestrator.demo import build_demo

        written = build_demo(models_dir, configs_dir, force=force)
    if written:
        for path in written:
            console.print(f"built {path}")
    else:
        console.print(f"{models_dir / 'demo'} already has versions 1 and 2 (use --force to rebuild)")


COMMANDS = [inspect, export, demo_model]
