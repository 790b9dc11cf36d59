"""Deploy and hot-reload times of the demo model, Docker runtime vs local runtime, in one run.

For each runtime and round: deploy version 1 → seconds until AVAILABLE (cold start); change the
spec to version 2 → seconds until the hot reload has version 2 AVAILABLE (same process or
container); then a crash (SIGKILL of the replica's main process) → seconds until AVAILABLE again:
Docker's restart policy brings the container back by itself, the local runtime has no supervisor,
so there it is a `deploy` that starts the replica again.

Docker runs the test stand-in image (tests/helpers/standin_image.py: our server on the host's
Python, bind-mounted) because no registry is reachable here; the server is the same program
in both runtimes, so the difference is Docker's own overhead.

    .venv/bin/python bench/deploy.py [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.errors import RuntimeFailure  # noqa: E402
from orchestrator.health import check_ready  # noqa: E402
from orchestrator.runtime.base import Runtime, free_port  # noqa: E402
from orchestrator.spec import Spec, parse_spec  # noqa: E402
from orchestrator.state import StateStore  # noqa: E402


def demo_model() -> Path:
    models = ROOT / "models" / "demo"
    if not (models / "2").is_dir():
        from orchestrator.demo import build_demo

        build_demo(ROOT / "models", ROOT / "serving_configs")
    return models


def spec_for(folder: Path, runtime: str, version: int, grpc: int, rest: int) -> Spec:
    text = (
        f"base_path: {demo_model()}\nversion_policy: {{specific: [{version}]}}\n"
        f"ports: {{grpc: {grpc}, rest: {rest}}}\n"
    )
    if runtime == "docker":
        from tests.helpers.standin_image import STANDIN_REPO

        text += f"image: {STANDIN_REPO}\ntag: standin\npull: never\n"
    path = folder / "serving_configs" / "demo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return parse_spec(text, file=path)


def make_runtime(name: str, store: StateStore) -> Runtime:
    if name == "docker":
        from orchestrator.runtime.docker import DockerRuntime
        from tests.helpers.standin_image import host_mounts

        return DockerRuntime(store, host_mounts=host_mounts())
    from orchestrator.runtime.local import LocalRuntime

    return LocalRuntime(store)


def crash(runtime: Runtime, store: StateStore) -> None:
    state = store.load("demo") or {}
    if runtime.name == "docker":
        from orchestrator.runtime.docker import DockerRuntime

        assert isinstance(runtime, DockerRuntime)
        (container,) = runtime.containers("demo")
        os.kill(container.pid, signal.SIGKILL)
    else:
        os.killpg(state["replicas"][0]["pid"], signal.SIGKILL)


def until_available(url: str, version: int, deadline_s: float = 180.0) -> None:
    end = time.monotonic() + deadline_s
    while not check_ready(url, {"demo": [version]}).ready:
        if time.monotonic() > end:
            raise SystemExit(f"demo v{version} not AVAILABLE at {url} within {deadline_s:g} s")
        time.sleep(0.05)


def until_down(url: str, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while check_ready(url, {"demo": [2]}).ready:
        if time.monotonic() > end:
            raise SystemExit(f"{url} still answers {deadline_s:g} s after the crash")
        time.sleep(0.02)


def one_round(runtime_name: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{runtime_name}-") as tmp:
        folder = Path(tmp)
        store = StateStore(folder / ".tfso")
        runtime = make_runtime(runtime_name, store)
        grpc, rest = free_port(), free_port()
        url = f"http://127.0.0.1:{rest}"
        result: dict[str, float] = {}
        try:
            start = time.monotonic()
            runtime.deploy([spec_for(folder, runtime_name, 1, grpc, rest)])
            result["deploy_s"] = time.monotonic() - start

            start = time.monotonic()
            outcome = runtime.deploy([spec_for(folder, runtime_name, 2, grpc, rest)])
            until_available(url, 2)
            result["hot_reload_s"] = time.monotonic() - start
            assert outcome.action == "reloaded", outcome

            crash(runtime, store)
            start = time.monotonic()
            until_down(url)
            if runtime_name == "local":  # no supervisor: deploy starts it again
                runtime.deploy([spec_for(folder, runtime_name, 2, grpc, rest)])
            until_available(url, 2)
            result["crash_to_available_s"] = time.monotonic() - start
        finally:
            if store.load("demo"):
                runtime.stop("demo")
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    parser.add_argument("--runtimes", default="docker,local")
    args = parser.parse_args()

    if "docker" in args.runtimes:
        from tests.helpers.standin_image import ensure_standin_image

        ensure_standin_image()
    medians: dict[str, dict[str, float]] = {}
    retried: dict[str, list[str]] = {}
    for name in args.runtimes.split(","):
        rounds = []
        while len(rounds) < args.rounds:
            try:
                rounds.append(one_round(name))
            except RuntimeFailure as exc:  # a failed start: say so, try the round again (3 at most)
                retried.setdefault(name, []).append(exc.message)
                if len(retried[name]) > 3:
                    raise
        medians[name] = {k: round(statistics.median(r[k] for r in rounds), 2) for k in rounds[0]}
    if args.json:
        print(json.dumps({"medians": medians, "retried": retried}, indent=2))
        return
    print(f"demo model, median of {args.rounds} round(s); seconds")
    print(f"{'':24}" + "".join(f"{n:>10}" for n in medians))
    for key in ("deploy_s", "hot_reload_s", "crash_to_available_s"):
        print(f"{key:24}" + "".join(f"{medians[n][key]:>10.2f}" for n in medians))
    for name, reasons in retried.items():
        print(f"{name}: {len(reasons)} round(s) retried: {'; '.join(reasons)}")
    if {"docker", "local"} <= set(medians):
        ratio = medians["docker"]["deploy_s"] / medians["local"]["deploy_s"]
        print(f"docker/local deploy ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
