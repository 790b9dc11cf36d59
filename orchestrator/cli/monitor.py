"""`tfsctl monitor up|down|status|dashboard NAME`: a real Prometheus over a deployment."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.table import Table

from orchestrator.cli._common import console, output_option, print_json, print_table
from orchestrator.cli.deploy import configs_option


class _MonitorGroup(click.Group):
    """`tfsctl monitor NAME` is `tfsctl monitor watch NAME` (the live view)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["watch", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_MonitorGroup)
def monitor() -> None:
    """Prometheus for a deployment, and a live view: `tfsctl monitor NAME`.

    up|down|status run a real Prometheus; dashboard writes Grafana JSON; report draws a PNG or HTML;
    baseline|drift|feedback tell whether the model is still right (payload logs, late labels).
    """


def _store():  # type: ignore[no-untyped-def]
    from orchestrator.state import StateStore

    return StateStore()


@monitor.command("up")
@click.argument("name")
@click.option("--port", type=click.IntRange(1, 65535), default=9090, show_default=True,
              help="Prometheus port (on 127.0.0.1).")
@click.option("--window", default="1m", show_default=True,
              help="Rate window of the recording rules (a Prometheus duration: 30s, 1m, 5m).")
@click.option("--scrape-interval", "scrape_s", type=click.FloatRange(0.1, 3600), default=5.0,
              show_default=True, help="Seconds between scrapes.")
@click.option("--eval-interval", "eval_s", type=click.FloatRange(0.1, 3600), default=5.0,
              show_default=True, help="Seconds between rule evaluations.")
@click.option("--error-ratio", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Alert when a version's error ratio stays above this.")
@click.option("--p99-ms", type=click.FloatRange(0, min_open=True), default=500.0, show_default=True,
              help="Alert when a version's p99 latency stays above this.")
@click.option("--for", "for_s", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds a condition must hold before its alert fires.")
@click.option("--max-psi", type=click.FloatRange(0, min_open=True), default=0.2, show_default=True,
              help="Alert when a feature's drift (PSI against the baseline) stays above this.")
@click.option("--min-accuracy", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="Alert when a version's accuracy on late labels stays below this.")
@click.option("--drift-window", default="1h", show_default=True,
              help="Payload-log window the exported drift covers (30m, 1h, 1d).")
@click.option("--drift-refresh", type=click.FloatRange(0.2, 3600), default=15.0,
              show_default=True, help="Seconds between drift recomputations.")
@click.option("--quality-port", type=click.IntRange(0, 65535), default=0,
              help="Port of the drift/accuracy exporter on 127.0.0.1 (0: a free one).")
@configs_option
@output_option
def monitor_up(name: str, port: int, window: str, scrape_s: float, eval_s: float,
               error_ratio: float, p99_ms: float, for_s: float, max_psi: float,
               min_accuracy: float, drift_window: str, drift_refresh: float, quality_port: int,
               configs_dir: Path, output: str) -> None:
    """Start Prometheus for NAME (data under .tfso/monitor/NAME/).

    When NAME's spec logs payloads (`logging:`), a drift/accuracy exporter runs beside it.
    """
    import re

    from orchestrator.monitor import MonitorError
    from orchestrator.monitor.report import parse_since
    from orchestrator.monitor.rules import Thresholds
    from orchestrator.monitor.scrape import Intervals
    from orchestrator.monitor.server import MonitorSettings, QualitySettings, up

    if not re.fullmatch(r"\d+(ms|s|m|h)", window):
        raise MonitorError(f"--window {window!r} is not a Prometheus duration",
                           fix="use a number and a unit, e.g. 30s, 1m or 5m")
    quality = None
    prefix = _log_prefix(name, configs_dir)
    if prefix is not None:
        from orchestrator.runtime.base import free_port

        quality = QualitySettings(prefix=prefix, port=quality_port or free_port(),
                                  window_s=parse_since(drift_window), refresh_s=drift_refresh)
    settings = MonitorSettings(
        port=port, window=window, intervals=Intervals(scrape_s, eval_s),
        thresholds=Thresholds(error_ratio=error_ratio, p99_s=p99_ms / 1000, for_s=for_s,
                              max_psi=max_psi, min_accuracy=min_accuracy),
        quality=quality)
    info = up(_store(), name, settings)
    if output == "json":
        print_json(info)
        return
    verb = "started" if info["action"] == "started" else "already running"
    where = (f"container {info['container'][:12]}, image {info['image']}" if info.get("container")
             else f"pid {info['pid']}")
    console.print(f"monitor {name}: Prometheus {verb} at {info['url']} ({where}); "
                  f"files in {info['folder']}", highlight=False)
    if info.get("quality"):
        console.print(f"drift/accuracy exporter at 127.0.0.1:{info['quality']['port']} "
                      f"(pid {info['quality']['pid']})", highlight=False)


def _log_prefix(name: str, configs_dir: Path) -> str | None:
    """NAME's payload log prefix, or None when its spec has no `logging:` (or is not here)."""
    from orchestrator.monitor import payload
    from orchestrator.spec import spec_path

    if not spec_path(name, configs_dir).is_file():
        return None
    spec = payload.spec_for(name, configs_dir)
    return None if spec.logging is None else payload.log_prefix(spec)


@monitor.command("render")
@click.argument("name")
@click.option("--target", type=click.Choice(["kubernetes"]), default="kubernetes",
              show_default=True, help="Where the Prometheus runs.")
@click.option("--namespace", default=None, help="Namespace of the pods (default: the spec's).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for prometheus.yml and rules.yml.")
@click.option("--window", default="1m", show_default=True, help="Rate window of the rules.")
@configs_option
def monitor_render(name: str, target: str, namespace: str | None, out: Path, window: str,
                   configs_dir: Path) -> None:
    """Write the scrape config and rules for a Prometheus in the cluster (NAME's pods).

    The pods carry `prometheus.io/*` annotations (and, with `kubernetes.service_monitor`, a
    ServiceMonitor); both are relabelled to the job and labels the rules and dashboard use.
    """
    import shutil
    import subprocess

    from orchestrator.monitor import MonitorError
    from orchestrator.monitor.rules import RuleNames, Thresholds, rules_yaml
    from orchestrator.monitor.scrape import RULES_FILE, Intervals, kubernetes_yaml
    from orchestrator.spec import load_spec
    from orchestrator.state import write_atomic

    spec = load_spec(name, configs_dir=configs_dir, check_files=False)
    if not spec.monitoring.prometheus:
        raise MonitorError(f"{name} does not export Prometheus metrics",
                           fix="set `monitoring: {prometheus: true}` in its spec")
    ns = namespace or spec.kubernetes.namespace
    out = out.absolute()
    write_atomic(out / RULES_FILE, rules_yaml(RuleNames(window), Thresholds()))
    write_atomic(out / "prometheus.yml", kubernetes_yaml(name, ns, RULES_FILE, Intervals()))
    # Debian's promtool is built without kubernetes_sd, so only the rules are checked here
    # (the test checks the relabelling with a static target in place of the discovery).
    promtool = shutil.which("promtool")
    if promtool is not None:
        run = subprocess.run([promtool, "check", "rules", str(out / RULES_FILE)],
                             capture_output=True, text=True, timeout=60, cwd=out)
        if run.returncode != 0:
            raise MonitorError("generated Prometheus rules rejected by promtool",
                               fix="report this as a bug", logs=run.stdout + run.stderr)
    console.print(f"wrote {out / 'prometheus.yml'} (pods of {name} in namespace {ns}) and "
                  f"{out / RULES_FILE}", highlight=False)


@monitor.command("down")
@click.argument("name")
def monitor_down(name: str) -> None:
    """Stop NAME's Prometheus (its data stays)."""
    from orchestrator.monitor.server import down

    result = down(_store(), name)
    who = (f"container {result['container'][:12]}" if result.get("container")
           else f"pid {result['pid']}")
    what = f"stopped Prometheus ({who})" if result["stopped"] else "was not running"
    console.print(f"monitor {name}: {what}; data kept in {result['data']}", highlight=False)


@monitor.command("status")
@click.argument("name")
@output_option
def monitor_status(name: str, output: str) -> None:
    """Is NAME's Prometheus running, and is every target up?"""
    from orchestrator.monitor.server import status

    result = status(_store(), name)
    if output == "json":
        print_json(result)
        return
    state = "running" if result["running"] else "not running (`tfsctl monitor up` starts it)"
    console.print(f"monitor {name}: Prometheus {state} at {result['url']}", highlight=False)
    if result["targets"]:
        print_table(None, ["job", "role", "replica", "url", "health", "error"],
                    [[t["job"], t["role"], t["replica"], t["url"], t["health"], t["error"]]
                     for t in result["targets"]])
    if result["alerts"]:
        print_table("alerts", ["alert", "state", "since", "summary"],
                    [[a["alert"], a["state"], a["since"], a["summary"]] for a in result["alerts"]])
    elif result["running"]:
        console.print("no alerts pending or firing")


@monitor.command("dashboard")
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File to write (default .tfso/monitor/NAME/dashboard.json).")
@click.option("--window", default=None,
              help="Rate window of the rules it reads (default: the running monitor's, or 1m).")
def monitor_dashboard(name: str, out: Path | None, window: str | None) -> None:
    """Write a Grafana dashboard (JSON, import-ready) for NAME's Prometheus."""
    import json

    from orchestrator.monitor.dashboard import dashboard
    from orchestrator.monitor.rules import RuleNames
    from orchestrator.monitor.server import folder, read_info
    from orchestrator.state import write_atomic

    store = _store()
    info = read_info(store, name) or {}
    names = RuleNames(window or info.get("window") or "1m")
    path = out or folder(store, name) / "dashboard.json"
    write_atomic(path.absolute(), json.dumps(dashboard(name, names), indent=2) + "\n")
    console.print(f"wrote {path} (Grafana: Dashboards > New > Import; pick the Prometheus at "
                  f"{info.get('url', 'your Prometheus')})", highlight=False)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(name: str, source: str, rows: list) -> Table:
    table = Table(title=f"{name} ({source}, {time.strftime('%H:%M:%S')})", title_justify="left",
                  header_style="bold")
    for column in ("replica", "address", "state", "version", "requests", "rps", "errors",
                   "p50 ms", "p99 ms", "queue"):
        table.add_column(column, justify="right" if column not in ("replica", "address",
                                                                      "state") else "left")
    for r in rows:
        table.add_row(f"{r.role} {r.replica}", r.address,
                      "[green]up[/]" if r.up else "[bold red]down[/]", r.version or "-",
                      _fmt(r.requests if r.up else None, ".0f"), _fmt(r.rps, ".1f"),
                      _fmt(r.error_ratio, ".1%"), _fmt(r.p50_ms, ".2f"), _fmt(r.p99_ms, ".2f"),
                      _fmt(r.queue, ".0f"))
    return table


@monitor.command("watch")
@click.argument("name")
@click.option("--source", type=click.Choice(["auto", "prometheus", "direct"]), default="auto",
              show_default=True,
              help="auto: the deployment's Prometheus when it runs, else the replicas directly.")
@click.option("--interval", type=click.FloatRange(0.2, 60), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one view (after one interval) and exit.")
@output_option
def monitor_watch(name: str, source: str, interval: float, once: bool, output: str) -> None:
    """Live per-replica, per-version rps, errors, latency and queue depth (Ctrl-C ends)."""
    from rich.live import Live

    from orchestrator.monitor import MonitorError
    from orchestrator.monitor.live import DirectSource, PrometheusSource, targets
    from orchestrator.monitor.scrape import metrics_path
    from orchestrator.monitor.server import is_running, read_info

    store = _store()
    state = store.load(name)
    if state is None:
        raise MonitorError(f"no deployment named {name!r}",
                           fix=f"deploy it first with `tfsctl deploy {name}`")
    model = (state.get("models") or [name])[0]
    info = read_info(store, name)
    src: DirectSource | PrometheusSource
    if source == "prometheus" or (source == "auto" and is_running(info)):
        if not is_running(info):
            raise MonitorError(f"no Prometheus runs for {name}",
                               fix=f"start it with `tfsctl monitor up {name}`, or use "
                                   "`--source direct`")
        assert info is not None
        src = PrometheusSource(info["url"], model, info.get("window", "1m"))
    else:
        path = metrics_path(state)
        if path is None:
            raise MonitorError(f"{name} does not export Prometheus metrics",
                               fix="set `monitoring: {prometheus: true}` in its spec and deploy")
        src = DirectSource(model, path)

    def rows() -> list:
        st = store.load(name) or state
        try:
            return src.sample(targets(st, store.load_canary(name)))
        except Exception as exc:  # Prometheus went away mid-view: say so, keep the view alive
            import requests

            if not isinstance(exc, (requests.RequestException, KeyError, ValueError)):
                raise
            raise MonitorError(f"{src.name} source failed: {exc}",
                               fix="check `tfsctl monitor status`, or use `--source direct`") from exc

    if once:
        rows()
        time.sleep(interval)
        result = rows()
        if output == "json":
            print_json({"name": name, "source": src.name, "rows": [r.to_json() for r in result]})
        else:
            console.print(_table(name, src.name, result))
        return
    rows()
    with Live(_table(name, src.name, []), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(_table(name, src.name, rows()))
        except KeyboardInterrupt:
            pass


@monitor.command("report")
@click.argument("name")
@click.option("--since", default="1h", show_default=True, help="How far back: 90s, 30m, 1h, 2d.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="report.png or report.html (the numbers go to OUT.json beside it).")
def monitor_report(name: str, since: str, out: Path) -> None:
    """Per-version rps, error ratio and latency over time, with deploy/rollout events marked."""
    from orchestrator.monitor import MonitorError
    from orchestrator.monitor import report as rep
    from orchestrator.monitor.server import is_running, read_info

    store = _store()
    since_s = rep.parse_since(since)
    info = read_info(store, name)
    if not is_running(info):
        raise MonitorError(f"no Prometheus runs for {name}: the report reads its stored data",
                           fix=f"start it with `tfsctl monitor up {name}` (it reports from then on)")
    assert info is not None
    state = store.load(name) or {}
    model = (state.get("models") or [name])[0]
    data = rep.build(store, name, model, info["url"], info.get("window", "1m"), since_s)
    beside = rep.write(data, out)
    versions = sorted({s["version"] for s in data["series"]})
    console.print(f"wrote {out} and {beside}: versions {', '.join(versions) or 'none'}, "
                  f"{len(data['events'])} events", highlight=False)


from orchestrator.cli import monitor_quality  # noqa: E402,F401  (adds baseline, drift, feedback)

COMMANDS = [monitor]
