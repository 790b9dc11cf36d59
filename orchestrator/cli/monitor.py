"""`tfsctl monitor up|down|status|dashboard NAME`: a real Prometheus over a deployment."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli._common import console, output_option, print_json, print_table


@click.group()
def monitor() -> None:
    """Prometheus for a deployment: scrape config, recording and alert rules, dashboards."""


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
@output_option
def monitor_up(name: str, port: int, window: str, scrape_s: float, eval_s: float,
               error_ratio: float, p99_ms: float, for_s: float, output: str) -> None:
    """Start Prometheus for NAME (data under .tfso/monitor/NAME/)."""
    import re

    from orchestrator.monitor import MonitorError
    from orchestrator.monitor.rules import Thresholds
    from orchestrator.monitor.scrape import Intervals
    from orchestrator.monitor.server import MonitorSettings, up

    if not re.fullmatch(r"\d+(ms|s|m|h)", window):
        raise MonitorError(f"--window {window!r} is not a Prometheus duration",
                           fix="use a number and a unit, e.g. 30s, 1m or 5m")
    settings = MonitorSettings(
        port=port, window=window, intervals=Intervals(scrape_s, eval_s),
        thresholds=Thresholds(error_ratio=error_ratio, p99_s=p99_ms / 1000, for_s=for_s))
    info = up(_store(), name, settings)
    if output == "json":
        print_json(info)
        return
    verb = "started" if info["action"] == "started" else "already running"
    console.print(f"monitor {name}: Prometheus {verb} at {info['url']} (pid {info['pid']}); "
                  f"files in {info['folder']}", highlight=False)


@monitor.command("down")
@click.argument("name")
def monitor_down(name: str) -> None:
    """Stop NAME's Prometheus (its data stays)."""
    from orchestrator.monitor.server import down

    result = down(_store(), name)
    what = f"stopped Prometheus (pid {result['pid']})" if result["stopped"] else "was not running"
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


COMMANDS = [monitor]
