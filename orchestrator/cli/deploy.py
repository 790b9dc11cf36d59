"""Deployment commands: render (the dry run), deploy, status, reload, logs, stop."""

from __future__ import annotations

import time
from pathlib import Path

import click

from orchestrator.cli._common import console, output_option, print_json, print_table

configs_option = click.option(
    "--configs-dir",
    type=click.Path(path_type=Path),
    default=Path("serving_configs"),
    show_default=True,
    help="Folder of deployment specs.",
)
runtime_option = click.option(
    "--runtime",
    type=click.Choice(["auto", "local", "docker", "kubernetes"]),
    default=None,
    help="Override the spec's runtime.",
)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write.")
@configs_option
@click.option("--target", type=click.Choice(["server", "kubernetes", "kserve"]), default="server",
              show_default=True,
              help="server: TF Serving's files and flags; kubernetes: manifests + kustomization.yaml; "
              "kserve: an InferenceService.")
@click.option("--namespace", default=None, help="Kubernetes namespace (default: the spec's).")
@click.option("--canary-version", type=int, default=None,
              help="Also render a canary serving this version (kubernetes, kserve).")
@click.option("--canary-weight", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Percent of traffic to the canary (Gateway routes; KServe canaryTrafficPercent).")
def render(names: tuple[str, ...], out: Path, configs_dir: Path, target: str, namespace: str | None,
           canary_version: int | None, canary_weight: int) -> None:
    """Write models.config, batching and monitoring files and the server flags (dry run).

    Several NAMEs render one server holding all of those models. `--target kubernetes` writes
    the cluster's objects instead (one YAML file each, plus kustomization.yaml), `--target
    kserve` a KServe InferenceService.
    """
    from orchestrator.cli._common import write_output
    from orchestrator.plan import build_plan
    from orchestrator.spec import load_spec

    if target != "server":
        _render_cluster(names, out, configs_dir, target, namespace, canary_version, canary_weight)
        return
    if namespace or canary_version is not None or canary_weight:
        raise click.UsageError("--namespace, --canary-version and --canary-weight apply to "
                               "--target kubernetes or kserve")
    specs = [load_spec(n, configs_dir=configs_dir) for n in names]
    plan = build_plan(specs, config_dir=str(out.resolve()))
    files = dict(plan.files)
    files["args.txt"] = "\n".join(plan.args) + "\n"
    if plan.env:  # what the server's environment must hold (TensorFlow reads it when it loads)
        files["env.txt"] = "".join(f"{k}={v}\n" for k, v in sorted(plan.env.items()))
    write_output(out, files)
    for name in sorted(files):
        console.print(f"wrote {out / name}")
    env = "".join(f"{k}={v} " for k, v in sorted(plan.env.items()))
    console.print(env + "tensorflow_model_server " + " ".join(plan.args), highlight=False, soft_wrap=True)


def _render_cluster(names: tuple[str, ...], out: Path, configs_dir: Path, target: str,
                    namespace: str | None, canary_version: int | None, canary_weight: int) -> None:
    from orchestrator.cli.kube import write_manifests
    from orchestrator.spec import KubernetesOptions, load_spec

    # the cluster reads model_uri, so the local model folder need not exist here
    specs = [load_spec(n, configs_dir=configs_dir, check_files=False) for n in names]
    if namespace is not None:
        try:
            options = KubernetesOptions(namespace=namespace)
        except ValueError:
            raise click.BadParameter(f"{namespace!r} is not a namespace name (lowercase DNS label)",
                                     param_hint="--namespace") from None
        specs = [s.model_copy(update={"kubernetes": s.kubernetes.model_copy(
            update={"namespace": options.namespace})}) for s in specs]
    for path in write_manifests(specs, target, out, canary_version=canary_version,
                                canary_weight=canary_weight):
        console.print(f"wrote {path}")


def _image_overrides(image: str | None, pull: str | None) -> dict[str, str]:
    """`--image REPO[:TAG]` and `--pull` as spec fields (the tag keeps the `-gpu` rule)."""
    from orchestrator.runtime.docker.api import split_ref

    overrides = {}
    if image:
        repo, tag = split_ref(image)
        overrides["image"] = repo
        if ":" in image[image.rfind("/") + 1 :]:
            overrides["tag"] = tag
    if pull:
        overrides["pull"] = pull
    return overrides


def _apply(names: tuple[str, ...], configs_dir: Path, runtime_name: str | None, output: str, verb: str,
           overrides: dict[str, object] | None = None) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from orchestrator.runtime.select import (
        check_host_runtime,
        choose_runtime,
        runtime_of_deployment,
    )

    specs = [_load_for(n, configs_dir, runtime_name, verb) for n in names]
    if overrides:
        specs = [s.model_copy(update=overrides) for s in specs]
    on = runtime_name
    if verb == "reload":
        from orchestrator.state import StateStore

        on = (StateStore().load(specs[0].name) or {}).get("runtime")
    for spec in specs:
        check_host_runtime(spec, on)
    if verb == "reload":
        runtime, why = runtime_of_deployment(specs[0].name), "the deployment's runtime"
    else:
        runtime, why = choose_runtime(specs[0], runtime_name)
    if output != "json":
        console.print(f"{verb} {specs[0].name}: {why}")
    started = time.monotonic()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True, disable=output == "json") as progress:
        task = progress.add_task(f"starting {specs[0].name}…", total=None)

        def on_poll(readiness) -> None:
            progress.update(task, description=f"waiting for AVAILABLE: {readiness.detail}")

        result = runtime.reload(specs, on_poll=on_poll) if verb == "reload" else runtime.deploy(specs, on_poll=on_poll)
    elapsed = time.monotonic() - started
    _after_deploy(result.name, result.action)
    if output == "json":
        print_json({"name": result.name, "runtime": result.runtime, "action": result.action,
                    "rest_url": result.rest_url, "grpc_address": result.grpc_address,
                    "replicas": list(result.replicas), "note": result.note, "seconds": round(elapsed, 2)})
        return
    if result.note:
        console.print(f"note: {result.note}")
    console.print(f"[bold green]{result.name} {result.action}[/] on {result.runtime} in {elapsed:.1f} s")
    console.print(f"  REST  {result.rest_url}/v1/models/{result.name}")
    console.print(f"  gRPC  {result.grpc_address}")
    console.print(f"  try   {_curl_line(specs[0], result.rest_url)}", highlight=False, soft_wrap=True)


def _load_for(name: str, configs_dir: Path, runtime_name: str | None, verb: str):  # type: ignore[no-untyped-def]
    """A spec; the local model folder is checked unless a cluster serves it (it reads model_uri)."""
    from orchestrator.spec import load_spec
    from orchestrator.state import StateStore

    spec = load_spec(name, configs_dir=configs_dir, check_files=False)
    runtime = runtime_name or spec.runtime
    if verb == "reload":
        runtime = (StateStore().load(spec.name) or {}).get("runtime", runtime)
    if runtime == "kubernetes":
        return spec
    return load_spec(name, configs_dir=configs_dir)


def _cluster_overrides(context: str | None, namespace: str | None, names: tuple[str, ...],
                       configs_dir: Path) -> dict[str, object]:
    """`--context`/`--namespace` as the spec's `kubernetes:` block."""
    from orchestrator.spec import KubernetesOptions, load_spec

    if context is None and namespace is None:
        return {}
    base = load_spec(names[0], configs_dir=configs_dir, check_files=False).kubernetes
    try:
        options = KubernetesOptions(namespace=namespace or base.namespace, context=context or base.context,
                                    service_monitor=base.service_monitor)
    except ValueError:
        raise click.BadParameter(f"{namespace!r} is not a namespace name (lowercase DNS label)",
                                 param_hint="--namespace") from None
    return {"kubernetes": options}


def _after_deploy(name: str, action: str) -> None:
    """Point a running `tfsctl monitor` at the replicas as they are now; note the event."""
    from orchestrator.monitor.events import record
    from orchestrator.monitor.server import refresh_targets
    from orchestrator.state import StateStore

    store = StateStore()
    refresh_targets(store, name)
    if action != "unchanged":
        record(store, name, f"deploy: {action}")


def _curl_line(spec, rest_url: str) -> str:
    """A predict request that fits the served signature, or the status request when unknown."""
    import json

    from orchestrator.savedmodel import example_instances, version_dirs

    if not spec.base_path.is_dir():  # a cluster deployment: the model lives at model_uri
        from orchestrator.kube.manifests import object_name

        return f"kubectl -n {spec.kubernetes.namespace} port-forward svc/{object_name(spec)} 8501"
    dirs = version_dirs(spec.base_path)
    wanted = spec.version_policy.select(list(dirs))
    instances = example_instances(dirs[wanted[-1]]) if wanted else None
    if instances is None:
        return f"curl -s {rest_url}/v1/models/{spec.name}"
    body = json.dumps({"instances": instances}, separators=(",", ":"))
    return f"curl -s -X POST {rest_url}/v1/models/{spec.name}:predict -d '{body}'"


@click.command()
@click.argument("names", nargs=-1, required=True)
@configs_option
@runtime_option
@click.option("--image", default=None, metavar="REPO[:TAG]",
              help="Docker runtime: run this image instead of the spec's (GPU specs add -gpu to the tag).")
@click.option("--pull", type=click.Choice(["missing", "always", "never"]), default=None,
              help="Docker runtime: when to pull the image (as Compose's pull_policy).")
@click.option("--context", default=None, help="Kubernetes runtime: the kubeconfig context (default: the spec's).")
@click.option("--namespace", default=None, help="Kubernetes runtime: the namespace (default: the spec's).")
@output_option
def deploy(names: tuple[str, ...], configs_dir: Path, runtime: str | None, image: str | None,
           pull: str | None, context: str | None, namespace: str | None, output: str) -> None:
    """Serve NAME (several NAMEs: one server with all of them) and wait until AVAILABLE.

    Idempotent: the same spec changes nothing; changed versions or labels hot-reload.
    """
    if (context or namespace) and (runtime or "kubernetes") != "kubernetes":
        raise click.UsageError("--context and --namespace go with --runtime kubernetes")
    overrides: dict[str, object] = {**_image_overrides(image, pull),
                                    **_cluster_overrides(context, namespace, names, configs_dir)}
    _apply(names, configs_dir, runtime, output, "deploy", overrides)


@click.command()
@click.argument("names", nargs=-1, required=True)
@configs_option
@output_option
def reload(names: tuple[str, ...], configs_dir: Path, output: str) -> None:
    """Re-read NAME's spec and hot-reload its config (no restart)."""
    _apply(names, configs_dir, None, output, "reload")


@click.command()
@click.argument("name")
@output_option
def status(name: str, output: str) -> None:
    """Per replica, model and version: state and error."""
    from orchestrator.runtime.select import runtime_of_deployment

    replicas = runtime_of_deployment(name).status(name)
    if output == "json":
        print_json({"name": name, "replicas": [r.to_json() for r in replicas]})
    else:
        rows: list[tuple[object, ...]] = []
        for r in replicas:
            if not r.running:
                rows.append((r.index, r.id, "EXITED", "-", "-", "-", r.detail))
                continue
            if not r.models and r.detail:  # a process beside the replicas (the capture agent)
                rows.append((r.index, r.id, "RUNNING", "-", "-", "-", r.detail))
            for m in r.models:
                if not m.reachable or m.error or not m.versions:
                    rows.append((r.index, r.id, "RUNNING", m.model, "-", "NOT READY", m.error or "no versions"))
                for v in m.versions:
                    rows.append((r.index, r.id, "RUNNING", m.model, v.version, v.state,
                                 v.error_message if v.error_code == "OK" else f"{v.error_code}: {v.error_message}"))
        print_table(name, ["REPLICA", "ID", "PROCESS", "MODEL", "VERSION", "STATE", "ERROR"], rows)
    healthy = all(r.running and all(m.reachable and m.available() for m in r.models) for r in replicas)
    raise SystemExit(0 if healthy else 1)


@click.command()
@click.argument("name")
@click.option("--tail", "-n", default=100, show_default=True,
              help="Lines per replica (with --predictions: the newest N records).")
@click.option("--predictions", is_flag=True,
              help="Logged request/response pairs (the spec's `logging:`) instead of server logs.")
@click.option("--since", default=None, help="With --predictions: only records this recent (10m, 1h, 2d).")
@click.option("--version", "version", type=int, default=None, help="With --predictions: one version.")
@output_option
@configs_option
def logs(name: str, tail: int, predictions: bool, since: str | None, version: int | None,
         output: str, configs_dir: Path) -> None:
    """Last log lines of every replica, or (--predictions) the logged predictions."""
    if predictions:
        _prediction_logs(name, tail, since, version, output, configs_dir)
        return
    if since is not None or version is not None or output != "table":
        raise click.UsageError("--since, --version and --output go with --predictions")
    from orchestrator.runtime.select import runtime_of_deployment

    for index, text in runtime_of_deployment(name).logs(name, tail=tail).items():
        click.echo("==> router <==" if index == -1 else f"==> replica {index} <==")
        click.echo(text)


def _prediction_logs(name: str, tail: int, since: str | None, version: int | None, output: str,
                     configs_dir: Path) -> None:
    from collections import deque

    from orchestrator.monitor import payload
    from orchestrator.monitor.report import parse_since

    since_s = parse_since(since) if since is not None else None
    prefix = payload.log_prefix(payload.spec_for(name, configs_dir))
    rows = deque(
        (payload.record_dict(r) for r in payload.read_logs(prefix, since_s=since_s, version=version)),
        maxlen=max(tail, 1),
    )
    if output == "json":
        print_json(list(rows))
        return
    print_table(f"{name}: logged predictions ({prefix}-*.tfrecord)",
                ["TIME (UTC)", "REQUEST ID", "VERSION", "SIGNATURE", "INPUTS", "OUTPUTS"],
                [[time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["time"])), r["request_id"],
                  r["version"], r["signature"], payload.short(r["inputs"]),
                  payload.short(r["outputs"])] for r in rows])


@click.command()
@click.argument("name")
def stop(name: str) -> None:
    """Stop NAME's replicas and forget the deployment."""
    from orchestrator.runtime.select import runtime_of_deployment

    stopped = runtime_of_deployment(name).stop(name)
    console.print(f"stopped {name}: {', '.join(stopped) or 'nothing was running'}")


@click.command("ls")
@output_option
def list_deployments(output: str) -> None:
    """Every deployment in the state folder: runtime, replicas, router, endpoints."""
    from orchestrator.state import StateStore

    store = StateStore()
    rows = []
    for name in store.names():
        state = store.load(name) or {}
        rows.append({"name": name, "runtime": state["runtime"], "models": state.get("models", [name]),
                     "replicas": len(state.get("replicas", [])), "router": bool(state.get("router")),
                     "rest_url": state.get("rest_url"), "grpc_address": state.get("grpc_address")})
    if output == "json":
        print_json({"deployments": rows})
        return
    print_table(None, ["NAME", "RUNTIME", "MODELS", "REPLICAS", "ROUTER", "REST", "GRPC"],
                [(r["name"], r["runtime"], ",".join(r["models"]), r["replicas"], "yes" if r["router"] else "no",
                  r["rest_url"], r["grpc_address"]) for r in rows])


COMMANDS = [render, deploy, reload, status, logs, stop, list_deployments]
