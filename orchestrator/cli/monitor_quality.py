"""`tfsctl monitor baseline|drift|feedback NAME`: is the model still right? (payload logs, labels)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from orchestrator.cli._common import console, output_option, print_json, print_table
from orchestrator.cli.deploy import configs_option
from orchestrator.cli.monitor import _store, monitor


def _folder(name: str) -> Path:
    from orchestrator.monitor.server import folder

    return folder(_store(), name)


def _prefix(name: str, configs_dir: Path) -> str:
    from orchestrator.monitor import payload

    return payload.log_prefix(payload.spec_for(name, configs_dir))


@monitor.command("baseline")
@click.argument("name")
@click.option("--samples", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Training samples: an .npz whose arrays are named by input (`output:NAME` "
                   "arrays give output references).")
@click.option("--from-log", is_flag=True, help="Use the payload log instead (with --since).")
@click.option("--since", default=None, help="With --from-log: this recent (1h, 1d; default all).")
@click.option("--version", type=int, default=None, help="With --from-log: one version's rows.")
@configs_option
@output_option
def monitor_baseline(name: str, samples: Path | None, from_log: bool, since: str | None,
                     version: int | None, configs_dir: Path, output: str) -> None:
    """Store NAME's reference distributions (quantile bins; class counts) for `monitor drift`."""
    import numpy as np

    from orchestrator.monitor import MonitorError, drift
    from orchestrator.monitor.report import parse_since

    if (samples is None) == (not from_log):
        raise click.UsageError("give exactly one of --samples FILE.npz and --from-log")
    if samples is not None and (since is not None or version is not None):
        raise click.UsageError("--since and --version go with --from-log")
    if samples is not None:
        try:
            with np.load(samples, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise MonitorError(f"cannot read samples {samples}: {exc}",
                               fix="save them with numpy.savez(path, input_name=array, ...)") from exc
        inputs = {k: v for k, v in arrays.items() if not k.startswith("output:")}
        outputs = {k.removeprefix("output:"): v for k, v in arrays.items()
                   if k.startswith("output:")}
        base = drift.build_baseline(name, f"samples {samples}", inputs, outputs)
    else:
        since_s = parse_since(since) if since is not None else None
        window = drift.load_window(_prefix(name, configs_dir), since_s=since_s, version=version)
        if not window.columns:
            raise MonitorError(f"no logged predictions for {name} in that window",
                               fix="send traffic first, or widen --since")
        ins, outs = window.tensors()
        base = drift.build_baseline(name, f"log {since or 'all'}"
                                    + (f" version {version}" if version else ""), ins, outs,
                                    split=False)
    path = _folder(name) / drift.BASELINE_FILE
    drift.save(path, base)
    if output == "json":
        print_json({"path": str(path), **base.to_json()})
        return
    console.print(f"baseline for {name}: {len(base.features)} features from {base.rows:,} rows "
                  f"({base.source}); wrote {path}", highlight=False)


@monitor.command("drift")
@click.argument("name")
@click.option("--since", default="1h", show_default=True, help="Window of the payload log.")
@click.option("--version", type=int, default=None, help="Only this version.")
@click.option("--max-psi", type=click.FloatRange(0, min_open=True), default=0.2, show_default=True,
              help="Exit 1 when any feature's PSI is above this.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw the PSI per feature and version to this PNG.")
@configs_option
@output_option
def monitor_drift(name: str, since: str, version: int | None, max_psi: float, out: Path | None,
                  configs_dir: Path, output: str) -> None:
    """PSI and Jensen-Shannon distance per feature and version against NAME's baseline.

    Exit 1 when a feature drifted more than --max-psi (for cron and CI); 0 otherwise.
    """
    from orchestrator.monitor import MonitorError, drift
    from orchestrator.monitor.report import parse_since

    since_s = parse_since(since)
    base = drift.load(_folder(name) / drift.BASELINE_FILE, name)
    t0 = time.perf_counter()
    window = drift.load_window(_prefix(name, configs_dir), since_s=since_s, version=version)
    if not window.columns:
        raise MonitorError(f"no logged predictions for {name} in the last {since}"
                           + (f" for version {version}" if version else ""),
                           fix="send traffic, widen --since, or check the spec's `logging:`")
    rows = []
    for v in sorted(window.columns):
        for d in drift.drift(base, window.columns[v]):
            rows.append({"version": v, **d.to_json(), "drifted": d.psi > max_psi})
    elapsed = time.perf_counter() - t0
    drifted = [r for r in rows if r["drifted"]]
    if out is not None:
        _plot(name, rows, max_psi, out)
    if output == "json":
        print_json({"name": name, "since": since, "max_psi": max_psi, "baseline": base.source,
                    "rows": {str(v): n for v, n in window.rows.items()}, "features": rows,
                    "drifted": len(drifted), "seconds": round(elapsed, 3)})
    else:
        print_table(f"{name}: drift over the last {since} against {base.source} "
                    f"({sum(window.rows.values()):,} rows, {elapsed:.2f} s)",
                    ["VERSION", "FEATURE", "SIDE", "KIND", "ROWS", "PSI", "JS", "STATUS"],
                    [[r["version"], r["feature"], r["side"], r["kind"], r["rows"],
                      f"{r['psi']:.4f}", f"{r['js']:.4f}",
                      "[bold red]DRIFT[/]" if r["drifted"] else "ok"] for r in rows])
        if out is not None:
            console.print(f"wrote {out}", highlight=False)
    if drifted:
        raise SystemExit(1)


def _plot(name: str, rows: list[dict[str, Any]], max_psi: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = sorted({r["version"] for r in rows})
    features = list(dict.fromkeys(r["feature"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, len(features) * 0.8), 4))
    width = 0.8 / max(1, len(versions))
    for i, v in enumerate(versions):
        psi = {r["feature"]: r["psi"] for r in rows if r["version"] == v}
        ax.bar([j + i * width for j in range(len(features))],
               [psi.get(f, 0.0) for f in features], width, label=f"version {v}")
    ax.axhline(max_psi, color="red", linestyle="--", label=f"--max-psi {max_psi:g}")
    ax.set_xticks([j + width * (len(versions) - 1) / 2 for j in range(len(features))], features,
                  rotation=45, ha="right")
    ax.set_ylabel("PSI")
    ax.set_title(f"{name}: drift against the baseline")
    ax.legend()
    fig.tight_layout()
    if out.suffix.lower() != ".png":
        plt.close(fig)
        raise click.UsageError(f"--out {out}: the drift chart is a .png file")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(out)


@monitor.command("feedback")
@click.argument("name")
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="CSV of request_id,label (batched requests: ID:ROW).")
@click.option("--since", default=None, help="Only predictions this recent (default: all logged).")
@click.option("--every", default="1h", show_default=True, help="Time window of the per-window rows.")
@click.option("--output-name", "output_name", default=None,
              help="The output tensor that holds the prediction (default: the only one).")
@click.option("--task", type=click.Choice(["auto", "classification", "regression"]),
              default="auto", show_default=True)
@configs_option
@output_option
def monitor_feedback(name: str, labels_path: Path, since: str | None, every: str,
                     output_name: str | None, task: str, configs_dir: Path, output: str) -> None:
    """Accuracy (or MAE/RMSE) per version and time window from labels joined by request id."""
    from orchestrator.monitor import MonitorError
    from orchestrator.monitor import feedback as fb
    from orchestrator.monitor.payload import read_logs
    from orchestrator.monitor.report import parse_since
    from orchestrator.state import write_atomic

    labels = fb.read_labels(labels_path)
    since_s = parse_since(since) if since is not None else None
    kind, preds = fb.predictions(read_logs(_prefix(name, configs_dir), since_s=since_s),
                                 output_name, task)
    result = fb.join(kind, preds, labels, parse_since(every))
    if result.joined == 0:
        raise MonitorError(f"none of the {len(labels)} labels matches a logged prediction of {name}",
                           fix="labels join on the request id the server returned (X-Request-Id); "
                               "check the ids, --since, and that the spec's `logging:` samples them")
    data = {"name": name, "time": time.time(), **result.to_json()}
    path = _folder(name) / fb.FEEDBACK_FILE
    write_atomic(path, json.dumps(data, indent=1) + "\n")
    if output == "json":
        print_json(data)
        return
    reg = kind == "regression"
    head = ["VERSION", "WINDOW (UTC)", "ROWS"] + (["MAE", "RMSE"] if reg else ["ACCURACY"])
    table = []
    for s in result.versions + result.windows:
        start = "all" if s.start is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(s.start))
        table.append([s.version, start, s.rows]
                     + ([f"{s.mae:.4f}", f"{s.rmse:.4f}"] if reg else [f"{s.accuracy:.2%}"]))
    print_table(f"{name}: {result.joined:,} of {result.labels:,} labels joined ({kind})",
                head, table)
    if not reg:
        per_class = [[s.version, c, f"{s.precision.get(c, 0):.2%}" if c in s.precision else "-",
                      f"{s.recall[c]:.2%}" if c in s.recall else "-"]
                     for s in result.versions for c in sorted(set(s.precision) | set(s.recall))]
        print_table("per class", ["VERSION", "CLASS", "PRECISION", "RECALL"], per_class)
    console.print(f"wrote {path} (exported as gauges while `tfsctl monitor up` runs)",
                  highlight=False)
