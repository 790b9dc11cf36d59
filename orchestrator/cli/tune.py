"""`tfsctl tune NAME`: measure batching settings on the model with the real server.

Prints rows/s and latency per setting and the spec lines of the best one whose p99 stays within
--p99-ms (paste them into serving_configs/NAME.yaml), measured over the protocol your clients use
(--protocol rest|grpc). Then, unless --batching-only, TensorFlow's
CPU settings on the best batching setting (one intra-op thread, oneDNN off). Each setting takes a
server start plus --duration seconds of load; nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli._common import err_console, output_option, print_json, print_table


@click.command("tune")
@click.argument("name")
@click.option("--configs-dir", type=click.Path(path_type=Path), default=Path("serving_configs"),
              show_default=True)  # fmt: skip
@click.option("--clients", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Concurrent connections, one request in flight each.")  # fmt: skip
@click.option("--duration", type=click.IntRange(1, 600), default=5, show_default=True,
              help="Seconds of load per setting.")  # fmt: skip
@click.option("--p99-ms", type=click.FloatRange(min=0, min_open=True), default=100.0,
              show_default=True, help="Latency budget the chosen setting must keep.")  # fmt: skip
@click.option("--data", "data_file", type=click.Path(path_type=Path, dir_okay=False),
              help="One request as TF Serving REST JSON (default: zeros from the signature).")
@click.option("--protocol", type=click.Choice(["rest", "grpc"]), default="rest", show_default=True,
              help="What your clients use: REST load from wrk, or gRPC Predict from h2load. The best "
                   "batching setting differs between them.")  # fmt: skip
@click.option("--batching-only", is_flag=True,
              help="Skip the second stage (TensorFlow's intra-op threads and oneDNN kernels).")
@output_option
def tune(name: str, configs_dir: Path, clients: int, duration: int, p99_ms: float,
         data_file: Path | None, protocol: str, batching_only: bool, output: str) -> None:  # fmt: skip
    """Measure batching settings on NAME's model and print the spec lines of the best."""
    from orchestrator import tune as t
    from orchestrator.spec import load_spec

    spec = load_spec(name, configs_dir=configs_dir)
    data = None
    if data_file is not None:
        try:
            data = data_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise click.BadParameter(f"cannot read {data_file}: {e}", param_hint="--data") from None

    def progress(setting: t.Setting) -> None:
        err_console.print(f"measuring {setting.label} ({duration} s)...")

    results = t.tune(spec, clients=clients, duration_s=duration, data=data, progress=progress,
                     p99_budget_ms=None if batching_only else p99_ms, protocol=protocol)  # fmt: skip
    chosen = t.best(results, p99_ms)
    if output == "json":
        print_json({
            "protocol": protocol,
            "results": [{"setting": r.setting.__dict__, "rows_per_s": r.rows_per_s,
                         "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors}
                        for r in results],
            "best": chosen.setting.__dict__ if chosen else None,
        })  # fmt: skip
        return
    print_table(
        f"{name}: {protocol}, {clients} clients, {duration} s per setting, p99 budget {p99_ms:g} ms",
        ["setting", "rows/s", "p50 ms", "p99 ms", "errors", ""],
        [(r.setting.label, f"{r.rows_per_s:.0f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
          r.errors, "best" if r is chosen else "") for r in results],
    )  # fmt: skip
    if chosen is None:
        click.echo(f"No setting kept p99 within {p99_ms:g} ms; raise --p99-ms or lower --clients.")
        return
    click.echo(f"\nIn serving_configs/{name}.yaml:\n")
    click.echo(chosen.setting.spec_lines(), nl=False)


COMMANDS = [tune]
