"""`tfsctl rollout`: start, status, pause, resume, promote, abort, report.

`start` runs in the foreground and its exit code is the outcome (0 promoted, 1 rolled back or
aborted), so a CI step is one command. Another shell can watch or steer it with the other verbs.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import click

from orchestrator.cli._common import console, output_option, print_json, print_table
from orchestrator.errors import RolloutError


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 30s, 2m, 500ms)")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: give weights like 10,25,50,100") from None


def _store():
    from orchestrator.rollout.manager import RolloutStore

    return RolloutStore()


def _show(status, output: str) -> None:
    from orchestrator.rollout.manager import owner_alive

    if output == "json":
        data = status.to_json()
        data["controller_running"] = owner_alive(status)
        print_json(data)
        return
    step = f"{status.step_index + 1}/{len(status.steps)}" if status.step_index >= 0 else "-"
    alive = "running" if owner_alive(status) else "not running"
    console.print(f"[bold]{status.name}[/] v{status.from_version} → v{status.to_version}: "
                  f"[bold]{status.phase.value}[/] step {step}, canary weight {status.weight}%, "
                  f"failed checks {status.failed_checks}/{status.thresholds.threshold} (controller {alive})")
    if status.mode == "shadow":
        console.print("  shadow: the canary gets mirrored requests only (router weight 0% until promotion); "
                      "steps count analysis windows")
    if status.message:
        console.print(f"  {status.message}")
    rows = []
    t = status.thresholds
    gates = [(label, attr, fmt) for label, attr, fmt, on in (
        ("OUTPUT PSI", "drift_psi", "{:.3f}", t.max_drift is not None),
        ("AGREEMENT", "agreement", "{:.2%}", t.min_agreement is not None)) if on]
    for r in status.history[-12:]:
        rate = "-" if r.error_rate is None else f"{r.error_rate:.2%}"
        p99 = "-" if r.p99_ms is None else f"{r.p99_ms:.1f}"
        extra = tuple("-" if getattr(r, attr) is None else fmt.format(getattr(r, attr)) for _, attr, fmt in gates)
        rows.append((time.strftime("%H:%M:%S", time.localtime(r.at)), r.phase, f"{r.weight}%", r.requests,
                     rate, p99, *extra, r.decision, r.reason))
    print_table(None, ["TIME", "PHASE", "WEIGHT", "REQUESTS", "ERRORS", "P99 MS", *(g[0] for g in gates),
                       "DECISION", "REASON"], rows)


def _run(status, target, webhooks, output: str) -> None:
    from orchestrator.rollout.machine import Phase
    from orchestrator.rollout.manager import RolloutManager

    def on_step(s) -> None:
        if output != "json" and s.history:
            last = s.history[-1]
            console.print(f"[{time.strftime('%H:%M:%S')}] {s.phase.value:<12} weight {s.weight:>3}%  "
                          f"{last.decision}" + (f" — {last.reason}" if last.reason else ""), highlight=False)

    manager = RolloutManager(target, _store(), webhooks=webhooks, on_step=on_step,
                             outputs=_outputs(status, target))
    final = manager.run(status)
    if output == "json":
        _show(final, output)
    else:
        colour = "green" if final.phase is Phase.SUCCEEDED else "red"
        console.print(f"[bold {colour}]rollout {final.phase.value}[/]: {final.message}")
    sys.exit(0 if final.phase is Phase.SUCCEEDED else 1)


def _outputs(status, target):  # type: ignore[no-untyped-def]
    """Where output gates read canary and stable answers: the payload logs (--max-drift), the
    shadow mirror (--mode shadow), or both."""
    mirrored = getattr(target, "agent", None)
    if status.thresholds.max_drift is None:
        return mirrored
    from orchestrator.monitor.gates import BothOutputs, LoggedOutputs, require_logging
    from orchestrator.monitor.payload import log_prefix
    from orchestrator.spec import load_spec

    spec = load_spec(status.name)
    require_logging(spec, "--max-drift")
    logged = LoggedOutputs(log_prefix(spec), status.from_version, status.to_version, started_at=status.started_at,
                           min_rows=status.thresholds.min_output_rows)
    return logged if mirrored is None else BothOutputs(logged, mirrored)


def _target(name: str, canary_replicas: int = 1):
    """Canary replicas on the runtime the deployment runs on (its state says which); a running
    `tfsctl monitor` learns when they come and go."""
    from orchestrator.monitor.server import refresh_targets
    from orchestrator.rollout.target import routed_target
    from orchestrator.state import StateStore

    def on_canary_change() -> None:
        refresh_targets(StateStore(), name)

    return routed_target(name, canary_replicas, on_canary_change=on_canary_change)


def _rollout_target(name: str, mode: str, version: int, canary_replicas: int = 1, status=None):  # type: ignore[no-untyped-def]
    """Labels mode works on the stable servers themselves; replicas mode adds canary replicas;
    shadow mode adds them too, and mirrors logged requests to them instead of routing clients."""
    if mode == "shadow":
        from orchestrator.monitor.payload import log_prefix
        from orchestrator.monitor.shadow import ShadowAgent, ShadowTarget
        from orchestrator.spec import load_spec

        if status is None:
            raise RolloutError("a shadow rollout needs its status", fix=f"`tfsctl rollout status {name}`")
        agent = ShadowAgent(log_prefix(load_spec(name)), status.from_version, version,
                            tolerance=status.thresholds.tolerance)
        return ShadowTarget(_target(name, canary_replicas), agent)
    if mode == "labels":
        from orchestrator.rollout.labels import LabelsTarget
        from orchestrator.spec import load_spec

        return LabelsTarget(load_spec(name), version=version)
    return _target(name, canary_replicas)


@click.group()
def rollout() -> None:
    """Canary rollouts that promote or roll back on measured error rate and latency."""


@rollout.command()
@click.argument("name")
@click.option("--version", "version", type=int, required=True, help="Version to roll out.")
@click.option("--steps", default="10,25,50,100", show_default=True, help="Canary weights, percent.")
@click.option("--interval", default="30s", show_default=True, help="Analysis interval (30s, 2m, 500ms).")
@click.option("--max-error-rate", type=float, default=0.01, show_default=True)
@click.option("--max-latency-p99-ms", type=float, default=None)
@click.option("--threshold", type=int, default=2, show_default=True, help="Failed checks before rollback.")
@click.option("--min-requests", type=int, default=20, show_default=True, help="Fewer = no data (halts).")
@click.option("--canary-replicas", type=int, default=1, show_default=True)
@click.option("--mode", type=click.Choice(["replicas", "labels", "shadow"]), default="replicas", show_default=True,
              help="replicas: canary replicas behind the router; labels: stable/canary labels on one server, "
              "split by clients (orchestrator.client.split.LabelSplit); shadow: every logged request is "
              "mirrored to the canary, its answer logged and compared, never returned (local runtime).")
@click.option("--min-agreement", type=float, default=None,
              help="Shadow mode: roll back when fewer mirrored answers agree with stable's [default: 0.99].")
@click.option("--tolerance", type=float, default=1e-3, show_default=True,
              help="Shadow mode: a regressor's answer agrees within this absolute difference.")
@click.option("--max-drift", type=float, default=None,
              help="Roll back when the canary's outputs drift from stable's over a step's window by more "
              "than this PSI (read from the payload logs; the spec needs `logging:`).")
@click.option("--min-output-rows", type=int, default=100, show_default=True,
              help="Logged (or mirrored) answers per side a window needs before outputs are compared.")
@click.option("--webhook", "webhooks", multiple=True, help="KIND=URL (pre-rollout, step, promote, rollback).")
@click.option("--metrics", "metrics", type=click.Choice(["router", "replicas", "prometheus"]), default="router",
              show_default=True,
              help="Where analysis reads counts and p99: router + TF Serving's counters; per-version "
              "tfso_* counters from the replicas; or the same from `tfsctl monitor up`'s Prometheus.")
@output_option
def start(name: str, version: int, steps: str, interval: str, max_error_rate: float,
          max_latency_p99_ms: float | None, threshold: int, min_requests: int, canary_replicas: int,
          webhooks: tuple[str, ...], mode: str, metrics: str, max_drift: float | None, min_output_rows: int,
          min_agreement: float | None, tolerance: float, output: str) -> None:
    """Roll NAME out to VERSION through canary steps; exit 0 when promoted, 1 when rolled back."""
    from orchestrator.rollout.machine import Thresholds
    from orchestrator.rollout.manager import new_status, owner_alive
    from orchestrator.rollout.webhooks import Webhooks
    from orchestrator.savedmodel import inspect_version, version_dirs
    from orchestrator.spec import load_spec

    if mode == "shadow":
        min_agreement = 0.99 if min_agreement is None else min_agreement
    elif min_agreement is not None:
        raise RolloutError("--min-agreement compares mirrored answers, which only --mode shadow makes",
                           fix="add --mode shadow, or use --max-drift to compare the canary's served answers")
    thresholds = Thresholds(max_error_rate=max_error_rate, max_latency_p99_ms=max_latency_p99_ms,
                            min_requests=min_requests, threshold=threshold, max_drift=max_drift,
                            min_output_rows=min_output_rows, min_agreement=min_agreement, tolerance=tolerance)
    hooks = Webhooks.parse(webhooks)
    if not 1 <= canary_replicas <= 4:
        raise RolloutError("--canary-replicas must be 1..4", fix="e.g. --canary-replicas 1")
    previous = _store().load(name)
    if previous is not None and not previous.terminal:
        raise RolloutError(
            f"a rollout of {name} is already {previous.phase.value} (v{previous.to_version}, weight {previous.weight}%)"
            + (" and its controller is running" if owner_alive(previous) else ""),
            fix=f"watch it with `tfsctl rollout status {name}`, or `tfsctl rollout abort {name}` / `resume {name}`")
    from orchestrator.state import StateStore

    deployed_on = str((StateStore().load(name) or {}).get("runtime", "local"))
    # A cluster reads versions from model_uri, not from this machine: a missing or broken one
    # fails the canary's start with its pod's own load error, and stable is untouched.
    on_cluster = deployed_on == "kubernetes"
    if on_cluster:
        from orchestrator.runtime.kubernetes import refuse_rollout_options

        refuse_rollout_options(mode, metrics)
    spec = load_spec(name, check_files=not on_cluster)
    if not on_cluster:
        dirs = version_dirs(spec.base_path)
        if version not in dirs:
            raise RolloutError(f"{name} has no version {version} under {spec.base_path} (found {sorted(dirs)})",
                               fix=f"export it first: `tfsctl export MODEL --name {name} --version {version}`")
        info = inspect_version(dirs[version], version)
        if info.error:
            raise RolloutError(f"{name} version {version} cannot be served: {info.error}", fix="re-export it")
    if spec.version_policy.kind != "specific":
        raise RolloutError(
            f"{name}'s spec loads versions by `{spec.version_policy.kind}`, so TF Serving would load "
            f"version {version} on every replica at once — no canary possible",
            fix=f"pin the stable version in {spec.source}: `version_policy: {{specific: [N]}}`")
    if max_drift is not None or mode == "shadow":
        from orchestrator.monitor.gates import require_logging

        require_logging(spec, "--max-drift" if max_drift is not None else "--mode shadow")
    if max_drift is not None or mode == "shadow":
        from orchestrator.monitor.shadow import refuse_unless_local

        refuse_unless_local(deployed_on, "--mode shadow" if mode == "shadow" else "--max-drift")
    current = spec.wanted_versions()
    if version in current:
        raise RolloutError(f"{name} already serves version {version}", fix="roll out a version it does not serve")
    status = new_status(name, name, max(current), version, steps=_steps(steps), interval_s=parse_duration(interval),
                        thresholds=thresholds, mode=mode, webhooks=list(webhooks), canary_replicas=canary_replicas,
                        metrics=metrics)
    target = _with_metrics(_rollout_target(name, mode, version, canary_replicas, status), metrics, name,
                           max(current), version)
    _run(status, target, hooks, output)


def _with_metrics(target, metrics: str, name: str, from_version: int, to_version: int):  # type: ignore[no-untyped-def]
    """`--metrics replicas|prometheus`: the same target, sampled from per-version counters."""
    if metrics == "router":
        return target
    from orchestrator.monitor.versions import VersionSampled, reader_for

    return VersionSampled(target, reader_for(metrics, name, name, from_version, to_version))


@rollout.command()
@click.argument("name")
@output_option
def status(name: str, output: str) -> None:
    """Where a rollout is: phase, step, weight, and the last measurements."""
    s = _load(name)
    _show(s, output)


def _load(name: str):
    s = _store().load(name)
    if s is None:
        raise RolloutError(f"no rollout of {name!r}", fix=f"start one: `tfsctl rollout start {name} --version N`")
    return s


@rollout.command()
@click.argument("name")
@output_option
def resume(name: str, output: str) -> None:
    """Resume a paused rollout, or take over one whose controller died."""
    from orchestrator.rollout import machine
    from orchestrator.rollout.manager import owner_alive
    from orchestrator.rollout.webhooks import Webhooks

    s = _load(name)
    if s.terminal:
        console.print(f"rollout of {name} already {s.phase.value}")
        return
    if owner_alive(s):
        _store().request(name, "resume")
        console.print(f"asked the running controller (pid {s.extra.get('owner_pid')}) to resume")
        return
    if s.phase is machine.Phase.PAUSED:
        s = machine.resume(s, time.time())
    target = _with_metrics(_rollout_target(name, s.mode, s.to_version, int(s.extra.get("canary_replicas", 1)), s),
                           str(s.extra.get("metrics", "router")), name, s.from_version, s.to_version)
    _run(s, target, Webhooks.parse(s.extra.get("webhooks", [])), output)


def _request_or_apply(name: str, what: str, wait_s: float = 300.0) -> None:
    from orchestrator.rollout import machine
    from orchestrator.rollout.manager import RolloutManager, owner_alive
    from orchestrator.rollout.webhooks import Webhooks

    s = _load(name)
    if s.terminal:
        raise RolloutError(f"the rollout of {name} already {s.phase.value}", fix="start a new one")
    store = _store()
    if owner_alive(s):
        store.request(name, what)
        end = time.monotonic() + wait_s
        with console.status(f"asked the controller to {what}…"):
            while time.monotonic() < end:
                now = store.load(name)
                if now is not None and (now.terminal or (what == "pause" and now.phase is machine.Phase.PAUSED)):
                    console.print(f"rollout of {name}: {now.phase.value}")
                    return
                time.sleep(0.2)
        raise RolloutError(f"the controller did not {what} within {wait_s:g} s", fix=f"`tfsctl rollout status {name}`")
    # No controller: do it here.
    manager = RolloutManager(_rollout_target(name, s.mode, s.to_version, int(s.extra.get("canary_replicas", 1)), s),
                             store,
                             webhooks=Webhooks.parse(s.extra.get("webhooks", [])))
    s = manager.request(s, what)
    console.print(f"rollout of {name}: {s.phase.value}")


@rollout.command()
@click.argument("name")
def abort(name: str) -> None:
    """Roll back now: canary weight 0, canary removed, stable untouched."""
    _request_or_apply(name, "abort")


@rollout.command()
@click.argument("name")
def pause(name: str) -> None:
    """Hold the canary at its current weight."""
    _request_or_apply(name, "pause")


@rollout.command()
@click.argument("name")
def promote(name: str) -> None:
    """Skip the remaining steps and promote the canary now."""
    _request_or_apply(name, "promote")


@rollout.command()
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="PNG path (default NAME-rollout.png).")
def report(name: str, out: Path | None) -> None:
    """A PNG of weight, request rate, error rate and p99 per step, and the JSON behind it."""
    from orchestrator.rollout.report import write_report

    s = _load(name)
    png = out or Path(f"{name}-rollout.png")
    json_path = write_report(s, png)
    console.print(f"wrote {png} and {json_path}")


COMMANDS = [rollout]
