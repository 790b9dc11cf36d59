"""deploy → AVAILABLE and reload → AVAILABLE: the kubernetes runtime on the emulated cluster beside
the local and docker runtimes, in one run.

The kubernetes rows measure what we control: API round trips (server-side apply, Deployment and
pod reads, model status through the pod proxy) and our waits, against tests/helpers/kube_cluster.py
whose pods are the same `tfs-model-server` the local runtime runs. A real cluster adds scheduling,
image pulls and the kubelet's ConfigMap sync (up to a minute), which no emulator can stand for.
A hot reload on the cluster is a ConfigMap edit picked up by TF Serving's config poll
(`--model_config_file_poll_wait_seconds`, 10 s in the manifests); the emulated pods poll every
`--config-poll` seconds (1 by default), so the row shows our part, not TF Serving's poll. The
local and docker runtimes ask for the reload over gRPC at once. Docker runs the test stand-in image
(tests/helpers/standin_image.py, pull policy never): no registry is reachable here.

The deploy phases (kubernetes, first pod) say where the time goes: the call (importing the
official client, reading the kubeconfig, reading and applying objects) → the Deployment applied →
the pod's process started (node agent) → its REST port answers → its readiness probe passes → the
runtime returns (pods Ready and every wanted version AVAILABLE, read through the pod proxy).

    .venv/bin/python bench/kube.py [--rounds 3] [--runtimes kubernetes,local,docker] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.runtime.base import Runtime, free_port  # noqa: E402
from orchestrator.spec import Spec, parse_spec  # noqa: E402
from orchestrator.state import StateStore  # noqa: E402

PHASES = (("call_to_applied_s", "call → Deployment applied"),
          ("applied_to_started_s", "applied → process started"),
          ("started_to_port_s", "started → REST port up"),
          ("port_to_ready_s", "port up → probe Ready"),
          ("ready_to_return_s", "Ready → runtime returns"))


def demo_model() -> Path:
    models = ROOT / "models" / "demo"
    if not (models / "2").is_dir():
        from orchestrator.demo import build_demo

        build_demo(ROOT / "models", ROOT / "serving_configs")
    return models


PORTS: dict[str, int] = {}


def spec_for(folder: Path, runtime: str, version: int) -> Spec:
    text = f"base_path: {demo_model()}\nversion_policy: {{specific: [{version}]}}\nhealth: {{deadline_s: 300}}\n"
    if runtime == "kubernetes":
        text += "model_uri: pvc://models/demo\nkubernetes: {namespace: bench}\n"
    else:
        ports = PORTS.setdefault(str(folder), free_port()), PORTS.setdefault(f"{folder}/rest", free_port())
        text += f"ports: {{grpc: {ports[0]}, rest: {ports[1]}}}\n"
    if runtime == "docker":
        from tests.helpers.standin_image import STANDIN_REPO, STANDIN_TAG

        text += f"image: {STANDIN_REPO}\ntag: {STANDIN_TAG}\npull: never\n"
    path = folder / "serving_configs" / "demo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return parse_spec(text, file=path, check_files=runtime != "kubernetes")


def one_round(runtime_name: str, args: argparse.Namespace) -> dict[str, float]:
    from tests.helpers.kube_cluster import EmulatedApiServer, NodeAgent

    with tempfile.TemporaryDirectory(prefix=f"bench-{runtime_name}-") as tmp:
        folder = Path(tmp)
        store = StateStore(folder / ".tfso")
        if runtime_name == "local":
            from orchestrator.runtime.local import LocalRuntime

            return timed(LocalRuntime(store), folder, "local")
        if runtime_name == "docker":
            from orchestrator.runtime.docker import DockerRuntime
            from tests.helpers.standin_image import host_mounts

            return timed(DockerRuntime(store, host_mounts=host_mounts()), folder, "docker")
        from orchestrator.runtime.kubernetes import KubernetesRuntime

        with EmulatedApiServer(namespaces=("bench",)) as api, \
                NodeAgent(api, claims={"models": demo_model().parent}, config_poll_s=args.config_poll) as node:
            kubeconfig = folder / "kubeconfig"
            kubeconfig.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "bench",
                "clusters": [{"name": "bench", "cluster": {"server": api.url}}],
                "users": [{"name": "bench", "user": {}}],
                "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}]}))
            kwargs: dict[str, Any] = {} if args.poll is None else {"poll_s": args.poll}
            runtime = KubernetesRuntime(store, kubeconfig=str(kubeconfig), **kwargs)
            return timed(runtime, folder, "kubernetes", api, node)


def phases(api: Any, node: Any, called: float, returned: float) -> dict[str, float]:
    """The first pod's way from the Deployment's apply to the runtime's return."""
    applied = next(t for t, method, path in api.requests
                   if method == "PATCH" and path.endswith("/deployments/demo"))
    first: dict[str, float] = {}
    for t, event, _ in node.timeline:
        first.setdefault(event, t)
    return {"call_to_applied_s": applied - called,
            "applied_to_started_s": first["started"] - applied,
            "started_to_port_s": first["port up"] - first["started"],
            "port_to_ready_s": first["ready"] - first["port up"],
            "ready_to_return_s": returned - first["ready"]}


def timed(runtime: Runtime, folder: Path, name: str, api: Any = None, node: Any = None) -> dict[str, float]:
    from orchestrator.health import check_ready

    result: dict[str, float] = {}
    try:
        start = time.monotonic()
        first = runtime.deploy([spec_for(folder, name, 1)])  # returns once v1 is AVAILABLE
        returned = time.monotonic()
        result["deploy_s"] = returned - start
        if api is not None:
            result["deploy_api_calls"] = len(api.requests)
            result.update(phases(api, node, start, returned))
            before = len(api.requests)
        start = time.monotonic()
        outcome = runtime.deploy([spec_for(folder, name, 2)])  # waits until v2 is AVAILABLE everywhere
        if api is None:  # a host port: check as a client would
            url = first.rest_url
            while not check_ready(url, {"demo": [2]}).ready:
                if time.monotonic() - start > 120:
                    raise SystemExit(f"{name}: v2 not AVAILABLE at {url} after 120 s")
                time.sleep(0.02)
        result["reload_s"] = time.monotonic() - start
        if api is not None:
            result["reload_api_calls"] = len(api.requests) - before
        assert outcome.action == "reloaded", outcome
    finally:
        runtime.stop("demo")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runtimes", default="kubernetes,local,docker")
    parser.add_argument("--poll", type=float, default=None,
                        help="the kubernetes runtime's poll interval in seconds (default: its own)")
    parser.add_argument("--config-poll", type=int, default=1,
                        help="the emulated pods' TF Serving config poll in seconds (the manifests say 10)")
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    args = parser.parse_args()
    names = args.runtimes.split(",")
    if "docker" in names:
        from tests.helpers.standin_image import ensure_standin_image

        ensure_standin_image()
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for _ in range(args.rounds):  # interleaved, so every runtime sees the same machine load
        for name in names:
            rounds[name].append(one_round(name, args))
    medians = {name: {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}
               for name, rs in rounds.items()}
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"medians": medians, "rounds": args.rounds, "load": round(load, 1)}, indent=2))
        return
    print(f"demo model, median of {args.rounds} interleaved round(s), load average {load:.1f}; seconds "
          f"(kubernetes = emulated cluster, pods' config poll {args.config_poll} s)")
    others = [n for n in names if n != "kubernetes"]
    head = f"{'':22}" + "".join(f"{n:>12}" for n in names)
    if "kubernetes" in names:
        head += "".join(f"{'k8s/' + n:>12}" for n in others)
    print(head)
    for key, label in (("deploy_s", "deploy → AVAILABLE"), ("reload_s", "reload → AVAILABLE")):
        line = f"{label:22}" + "".join(f"{medians[n][key]:>12.2f}" for n in names)
        if "kubernetes" in names:
            line += "".join(f"{medians['kubernetes'][key] / medians[n][key]:>12.2f}" for n in others)
        print(line)
    if "kubernetes" in names:
        k = medians["kubernetes"]
        print("kubernetes deploy, first pod: " + ", ".join(f"{label} {k[key]:.2f}" for key, label in PHASES))
        print(f"API requests: deploy {k['deploy_api_calls']:.0f}, reload {k['reload_api_calls']:.0f}")


if __name__ == "__main__":
    main()
