"""Deployment commands: render a plan (the dry run), deploy, status, reload, logs, stop."""

from __future__ import annotations

import os
from pathlib import Path

import click

from orchestrator.cli._common import console

configs_option = click.option(
    "--configs-dir",
    type=click.Path(path_type=Path),
    default=Path("serving_configs"),
    show_default=True,
    help="Folder of deployment specs.",
)


def write_files_atomically(out: Path, files: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write.")
@configs_option
def render(names: tuple[str, ...], out: Path, configs_dir: Path) -> None:
    """Write models.config, batching and monitoring files and the server flags (dry run).

    Several NAMEs render one server holding all of those models.
    """
    from orchestrator.plan import build_plan
    from orchestrator.spec import load_spec

    specs = [load_spec(n, configs_dir=configs_dir) for n in names]
    plan = build_plan(specs, config_dir=str(out.resolve()))
    files = dict(plan.files)
    files["args.txt"] = "\n".join(plan.args) + "\n"
    write_files_atomically(out, files)
    for name in sorted(files):
        console.print(f"wrote {out / name}")
    console.print("tensorflow_model_server " + " ".join(plan.args), highlight=False, soft_wrap=True)


COMMANDS = [render]
