"""Container commands: ps, scale, and compose (a Docker Compose file for a spec)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from orchestrator.cli._common import console, output_option, print_json, print_table


@click.command()
@click.argument("name")
@output_option
def ps(name: str, output: str) -> None:
    """NAME's replicas: container (or process), image, status, restarts, ports."""
    from orchestrator.runtime.select import runtime_of_deployment

    rows = runtime_of_deployment(name).ps(name)
    if output == "json":
        print_json({"name": name, "replicas": rows})
        return
    table = []
    for r in rows:
        ports = f"gRPC {r.get('grpc_port')}  REST {r.get('rest_port')}"
        started = str(r.get("started_at", ""))[:19].replace("T", " ")
        status = r.get("status", "") + (f" ({r['restarts']} restarts)" if r.get("restarts") else "")
        table.append((r.get("replica"), r.get("id"), r.get("name", ""), r.get("image", ""), status,
                      ports, started or r.get("detail", "")))
    print_table(name, ["REPLICA", "ID", "NAME", "IMAGE", "STATUS", "PORTS", "STARTED (UTC)"], table)


@click.command()
@click.argument("name")
@click.argument("replicas", type=click.IntRange(1, 64))
@output_option
def scale(name: str, replicas: int, output: str) -> None:
    """Run REPLICAS replicas of NAME (the same container each; waits until AVAILABLE).

    The next `tfsctl deploy NAME` applies the spec's `replicas:` again.
    """
    from orchestrator.runtime.select import runtime_of_deployment

    started = time.monotonic()
    result = runtime_of_deployment(name).scale(name, replicas)
    elapsed = time.monotonic() - started
    if output == "json":
        print_json({"name": result.name, "runtime": result.runtime, "action": result.action,
                    "rest_url": result.rest_url, "grpc_address": result.grpc_address,
                    "replicas": list(result.replicas), "seconds": round(elapsed, 2)})
        return
    console.print(f"[bold green]{name} {result.action}[/] to {len(result.replicas)} replica(s) "
                  f"in {elapsed:.1f} s")
    for r in result.replicas:
        console.print(f"  replica {r['index']}: REST 127.0.0.1:{r['rest_port']}  "
                      f"gRPC 127.0.0.1:{r['grpc_port']}", highlight=False)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder to write (default compose/NAME).")
@click.option("--configs-dir", type=click.Path(path_type=Path), default=Path("serving_configs"),
              show_default=True, help="Folder of deployment specs.")
@click.option("--image", default=None, metavar="REPO[:TAG]", help="Image instead of the spec's.")
def compose(names: tuple[str, ...], out: Path | None, configs_dir: Path, image: str | None) -> None:
    """Write a Docker Compose file (and a GPU variant) equivalent to the Docker runtime's containers."""
    from orchestrator.cli.deploy import _image_overrides
    from orchestrator.compose import write_compose
    from orchestrator.spec import load_spec

    specs = [load_spec(n, configs_dir=configs_dir) for n in names]
    overrides = _image_overrides(image, None)
    if overrides:
        specs = [s.model_copy(update=overrides) for s in specs]
    out = out or Path("compose") / specs[0].name
    for path in write_compose(specs, out):
        console.print(f"wrote {path}")
    console.print(f"start it with: docker compose -f {out / 'compose.yaml'} up -d", highlight=False)


COMMANDS = [ps, scale, compose]
