"""Packaging commands: convert a version to TFLite/ONNX/TF.js/TF-TRT (each checked against the
SavedModel), serve a TF.js export in a browser page, and write TF Serving warmup records.

NAME is a spec name (serving_configs/NAME.yaml), a spec path, a model base path, or a version
folder (`models/x/3`). TensorFlow and the converters load inside the commands.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from orchestrator.cli._common import console, err_console, output_option, print_json, print_table
from orchestrator.errors import ModelError

DEFAULT_WEB_PORT = 8600


def resolve_version(name: str, version: int | None, configs_dir: Path) -> tuple[str, int, Path]:
    """(model name, version, version folder) for NAME; the newest version unless one is given.

    NAME is a spec (CONFIGS_DIR/NAME.yaml, or a .yaml path) when one exists, else a folder: a
    model base path or one version folder.
    """
    from orchestrator.savedmodel import version_dirs

    path = Path(name)
    is_spec = name.endswith((".yaml", ".yml")) or (configs_dir / f"{name}.yaml").is_file()
    if not is_spec and path.is_dir() and path.name.isdigit() and (path / "saved_model.pb").is_file():
        if version is not None and version != int(path.name):
            raise ModelError(f"{path} is version {int(path.name)}, not {version}")
        return path.resolve().parent.name, int(path.name), path.resolve()
    if not is_spec and path.is_dir():
        base, model = path.resolve(), path.resolve().name
    else:
        from orchestrator.spec import load_spec

        spec = load_spec(name, configs_dir=configs_dir)
        base, model = Path(spec.base_path), spec.name
    found = version_dirs(base)
    if not found:
        raise ModelError(
            f"{base} has no numbered version folders",
            fix="export a model first: tfsctl export MODEL --name NAME",
        )
    if version is None:
        version = max(found)
    elif version not in found:
        raise ModelError(
            f"{base} has no version {version} (there are {', '.join(map(str, found))})",
            fix="pass --version with one of those",
        )
    return model, version, found[version]


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ INFO/WARNING lines off the user's screen (errors still show)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _warn_loudly(text: str) -> None:
    err_console.print(f"[bold yellow on red] WARNING [/] [bold yellow]{escape(text)}[/]", soft_wrap=True)


def _load_samples(samples: Path | None, version_dir: Path, signature: str) -> Any:
    from orchestrator.convert.samples import load_samples, read_signature

    if samples is None:
        return None
    return load_samples(samples, read_signature(version_dir, signature))


version_option = click.option("--version", type=int, default=None, help="Version (default: newest).")
configs_option = click.option(
    "--configs-dir", type=click.Path(path_type=Path), default=Path("serving_configs"),
    show_default=True, help="Where NAME.yaml specs live.",
)
signature_option = click.option(
    "--signature", default="serving_default", show_default=True, help="Signature to convert/call."
)
samples_option = click.option(
    "--samples", type=click.Path(path_type=Path, dir_okay=False),
    help="Real inputs: .npz (one array per input name) or .npy (single-input models). "
    "Without it, random inputs are made from the signature (with a warning).",
)


@click.command()
@click.argument("name")
@version_option
@click.option("--to", "formats", required=True, multiple=True,
              help="Formats, comma-separated: tflite, tflite-dynamic, tflite-int8, onnx, tfjs, "
              "tfjs-f16, tfjs-uint8, tftrt, tftrt-fp16.")
@samples_option
@signature_option
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (13-18).")
@click.option("--trt-precision", type=click.Choice(["FP32", "FP16"], case_sensitive=False),
              default=None, help="TF-TRT precision (default FP32; FP16 for tftrt-fp16).")
@click.option("--max-abs-diff", type=float, default=None,
              help="Fail when any output differs from the SavedModel's by more.")
@click.option("--min-agreement", type=float, default=None,
              help="Fail when top-1 agreement with the SavedModel is lower (0-1).")
@click.option("--latency-runs", type=int, default=20, show_default=True,
              help="Single-example calls timed per runtime.")
@click.option("--max-samples", type=click.IntRange(min=1), default=512, show_default=True,
              help="Samples used for checking and INT8 calibration (the first N of the file).")
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("exports"), show_default=True)
@click.option("--install", is_flag=True,
              help="With one TFLite format: copy the version with the model.tflite beside it into "
              "a NEW version folder of the model (atomically), to deploy and roll out like any "
              "other; serving it from the .tflite needs `prefer_tflite_model: true` in the spec.")
@configs_option
@output_option
def convert(
    name: str,
    version: int | None,
    formats: tuple[str, ...],
    samples: Path | None,
    signature: str,
    opset: int,
    trt_precision: str | None,
    max_abs_diff: float | None,
    min_agreement: float | None,
    latency_runs: int,
    max_samples: int,
    out_dir: Path,
    install: bool,
    configs_dir: Path,
    output: str,
) -> None:
    """Convert a SavedModel version and check each artifact against it.

    Writes OUT_DIR/NAME/<version>/<format>/ with the artifact and report.json (size, max abs
    diff, top-1 agreement, latency). Exit 8 if a format failed, 9 if one drifted past
    --max-abs-diff/--min-agreement.
    """
    from orchestrator.convert.onnx import check_opset
    from orchestrator.convert.pipeline import convert_version, parse_formats, raise_for_reports
    from orchestrator.convert.report import TABLE_COLUMNS, table_row
    from orchestrator.convert.samples import SYNTHETIC_WARNING
    from orchestrator.convert.verify import Thresholds

    _quiet_tensorflow()
    wanted = parse_formats(formats)
    thresholds = Thresholds(max_abs_diff=max_abs_diff, min_agreement=min_agreement)
    if "onnx" in wanted:
        check_opset(opset)
    if install and (len(wanted) != 1 or not wanted[0].startswith("tflite")):
        raise click.UsageError(
            "--install takes exactly one TFLite format (tflite, tflite-dynamic or tflite-int8)"
        )
    model, version, version_dir = resolve_version(name, version, configs_dir)
    loaded = _load_samples(samples, version_dir, signature)
    if loaded is None:
        _warn_loudly(SYNTHETIC_WARNING)

    def progress(fmt: str, message: str) -> None:
        err_console.print(f"[dim]{escape(fmt)}:[/] {escape(message)}", highlight=False)

    with console.status(f"converting {model} version {version}…"):
        reports = convert_version(
            version_dir,
            model=model,
            version=version,
            formats=wanted,
            out_root=out_dir,
            samples=loaded,
            signature_key=signature,
            options={"opset": opset, "trt_precision": trt_precision},
            thresholds=thresholds,
            latency_runs=latency_runs,
            max_samples=max_samples,
            on_event=progress,
        )
    installed = None
    # Only a checked artifact is installed: not one that failed or drifted past the thresholds.
    if install and reports and reports[0].status == "ok" and reports[0].artifact:
        from orchestrator.convert.install import install_tflite

        installed = install_tflite(version_dir, Path(reports[0].artifact))
    if output == "json":
        docs = [r.to_json() for r in reports]
        if installed is not None:
            docs[0]["installed"] = {"version": int(installed.name), "path": str(installed)}
        print_json(docs)
    else:
        count = reports[0].samples.get("count") if reports else 0
        source = reports[0].samples.get("source") if reports else "-"
        print_table(
            f"{model} v{version} → {out_dir / model / str(version)}  ({count} samples, {source})",
            TABLE_COLUMNS,
            [table_row(r) for r in reports],
        )
        if installed is not None:
            console.print(
                f"installed as version {installed.name}: [bold]{escape(str(installed))}[/] "
                "(the SavedModel and model.tflite; `prefer_tflite_model: true` serves the .tflite)"
            )
    raise_for_reports(reports)


@click.command()
@click.argument("name")
@version_option
@click.option("--format", "fmt", type=click.Choice(["tfjs", "tfjs-f16", "tfjs-uint8"]),
              default="tfjs", show_default=True, help="Which TF.js export to serve.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=DEFAULT_WEB_PORT, show_default=True, help="0 picks a free one.")
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("exports"), show_default=True)
@configs_option
def web(name: str, version: int | None, fmt: str, host: str, port: int, out_dir: Path,
        configs_dir: Path) -> None:
    """Serve a page that runs the TF.js export in the browser on inputs you type or upload."""
    from orchestrator.convert.errors import ConvertError
    from orchestrator.convert.pipeline import export_dir
    from orchestrator.web.server import WebApp

    model, version, _ = resolve_version(name, version, configs_dir)
    model_dir = export_dir(out_dir, model, version) / fmt
    if not (model_dir / "model.json").is_file():
        raise ConvertError(
            f"no TF.js export at {model_dir}",
            format=fmt,
            fix=f"tfsctl convert {name} --version {version} --to {fmt}",
        )
    app = WebApp(model_dir, model=model, version=version, fmt=fmt, host=host, port=port,
                 log_requests=True)
    app.start()

    def _stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)  # `docker stop`/`kill` end it as cleanly as Ctrl-C
    console.print(f"serving {model} v{version} ({fmt}) at [bold]{app.url}[/]  (Ctrl-C stops)")
    try:
        app.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()


@click.command()
@click.argument("name")
@version_option
@samples_option
@click.option("--count", type=int, default=10, show_default=True, help="Records (1-1000).")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Examples per request.")
@click.option("--from-log", "from_log", is_flag=True,
              help="Use the newest COUNT logged Predict requests (the spec's `logging:`) instead.")
@signature_option
@configs_option
@output_option
def warmup(name: str, version: int | None, samples: Path | None, count: int, batch_size: int,
           from_log: bool, signature: str, configs_dir: Path, output: str) -> None:
    """Write assets.extra/tf_serving_warmup_requests into the version folder.

    TF Serving replays these Predict requests when it loads the version.
    """
    from orchestrator.convert.samples import SYNTHETIC_WARNING, read_signature, synthetic_samples
    from orchestrator.convert.warmup import check_count, read_records, write_warmup

    _quiet_tensorflow()
    check_count(count)
    model, version, version_dir = resolve_version(name, version, configs_dir)
    if from_log:
        if samples is not None:
            raise click.UsageError("--from-log and --samples are alternatives: give one")
        from orchestrator.monitor.warmup_log import warmup_from_log

        result = warmup_from_log(name, model, version, version_dir, configs_dir,
                                 count=count, signature=signature)
        if output == "json":
            print_json(result)
        else:
            console.print(f"wrote {result['records']} warmup records from the prediction log "
                          f"→ [bold]{result['path']}[/]")
        return
    loaded = _load_samples(samples, version_dir, signature)
    if loaded is None:
        _warn_loudly(SYNTHETIC_WARNING)
        loaded = synthetic_samples(read_signature(version_dir, signature), max(count * batch_size, 1))
    with console.status("writing warmup records…"):
        path = write_warmup(version_dir, loaded, model_name=model, signature_key=signature,
                            count=count, batch_size=batch_size)
        parsed = len(read_records(path))
    result = {"model": model, "version": version, "path": str(path), "records": parsed,
              "batch_size": batch_size, "signature": signature, "samples": loaded.source,
              "size_bytes": path.stat().st_size}
    if output == "json":
        print_json(result)
    else:
        console.print(f"wrote {parsed} warmup records ({batch_size} example(s) each) → [bold]{path}[/]")


COMMANDS = [convert, web, warmup]
