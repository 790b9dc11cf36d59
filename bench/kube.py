"""deploy → AVAILABLE and reload → AVAILABLE: the kubernetes runtime on the emulated cluster vs
the local runtime, in one run.

The kubernetes rows measure what we control: API round trips (server-side apply, Deployment and
pod reads, model status through the pod proxy) and our waits, against tests/helpers/kube_cluster.py
whose pods are the same `tfs-model-server` the local runtime runs. A real cluster adds scheduling,
image pulls and the kubelet's ConfigMap sync (up to a minute), which no emulator can stand for.
A hot reload on the cluster is the ConfigMap edit picked up by TF Serving's config poll
(`--model_config_file_poll_wait_seconds=10`), so it takes up to that long by design; the local
runtime asks for the reload over gRPC at once.

    .venv/bin/python bench/kube.py [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.runtime.base import Runtime, free_port  # noqa: E402
from orchestrator.spec import Spec, parse_spec  # noqa: E402
from orchestrator.state import StateStore  # noqa: E402


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
    path = folder / "serving_configs" / "demo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return parse_spec(text, file=path, check_files=runtime != "kubernetes")


def one_round(runtime_name: str) -> dict[str, float]:
    from orchestrator.runtime.kubernetes import KubernetesRuntime
    from orchestrator.runtime.local import LocalRuntime
    from tests.helpers.kube_cluster import EmulatedApiServer, NodeAgent

    with tempfile.TemporaryDirectory(prefix=f"bench-{runtime_name}-") as tmp:
        folder = Path(tmp)
        store = StateStore(folder / ".tfso")
        result: dict[str, float] = {}
        if runtime_name == "local":
            runtime: Runtime = LocalRuntime(store)
            return timed(runtime, folder, "local", result, None)
        with EmulatedApiServer(namespaces=("bench",)) as api, \
                NodeAgent(api, claims={"models": demo_model().parent}):
            kubeconfig = folder / "kubeconfig"
            kubeconfig.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "bench",
                "clusters": [{"name": "bench", "cluster": {"server": api.url}}],
                "users": [{"name": "bench", "user": {}}],
                "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}]}))
            runtime = KubernetesRuntime(store, kubeconfig=str(kubeconfig), poll_s=0.1)
            return timed(runtime, folder, "kubernetes", result, api)


def timed(runtime: Runtime, folder: Path, name: str, result: dict[str, float], api: object) -> dict[str, float]:
    requests = getattr(api, "requests", None)
    try:
        start = time.monotonic()
        runtime.deploy([spec_for(folder, name, 1)])
        result["deploy_s"] = time.monotonic() - start
        if requests is not None:
            result["deploy_api_calls"] = len(requests)
            before = len(requests)
        start = time.monotonic()
        outcome = runtime.deploy([spec_for(folder, name, 2)])  # waits until v2 is AVAILABLE everywhere
        result["reload_s"] = time.monotonic() - start
        if requests is not None:
            result["reload_api_calls"] = len(requests) - before
        assert outcome.action == "reloaded", outcome
    finally:
        runtime.stop("demo")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    args = parser.parse_args()
    rounds: dict[str, list[dict[str, float]]] = {"kubernetes": [], "local": []}
    for _ in range(args.rounds):  # interleaved, so both runtimes see the same machine load
        for name in rounds:
            rounds[name].append(one_round(name))
    medians = {name: {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}
               for name, rs in rounds.items()}
    if args.json:
        print(json.dumps({"medians": medians, "rounds": args.rounds}, indent=2))
        return
    print(f"demo model, median of {args.rounds} round(s); seconds (kubernetes = emulated cluster)")
    print(f"{'':22}{'kubernetes':>12}{'local':>10}{'ratio':>8}")
    for key, label in (("deploy_s", "deploy → AVAILABLE"), ("reload_s", "reload → AVAILABLE")):
        k, loc = medians["kubernetes"][key], medians["local"][key]
        print(f"{label:22}{k:>12.2f}{loc:>10.2f}{k / loc:>8.2f}")
    print(f"API requests: deploy {medians['kubernetes']['deploy_api_calls']:.0f}, "
          f"reload {medians['kubernetes']['reload_api_calls']:.0f} (poll every 0.1 s while waiting)")


if __name__ == "__main__":
    main()
