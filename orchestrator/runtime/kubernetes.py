"""The kubernetes runtime: the same spec and verbs on a cluster, through the official client.

deploy server-side applies (field manager tfsctl) what `tfsctl render --target kubernetes`
writes, then waits until the Deployment is rolled out AND every pod reports every wanted
version AVAILABLE, read through the API server's pod proxy (no port-forward, no Service
needed). A change of versions or labels only rewrites the ConfigMap: TF Serving re-reads it
(`--model_config_file_poll_wait_seconds`), so pods reload in place, with the two-step label
move; a change of image, flags or resources rolls the Deployment (maxUnavailable 0). A failed
rollout or reload puts the previous objects back, so what served before keeps serving.

Canaries are a second Deployment serving only the new version; the split is Gateway API route
weights when the spec names a Gateway, else the replica ratio behind the one Service.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import HealthTimeout, RolloutError, RuntimeFailure
from orchestrator.health import AVAILABLE, ModelHealth, Readiness, VersionState
from orchestrator.kube import manifests
from orchestrator.kube.api import Cluster, Obj, connect, selector
from orchestrator.plan import MODELS_CONFIG, ReloadStep, model_config, models_config_text
from orchestrator.router.base import Backend, Router
from orchestrator.runtime.base import Deployment, OnPoll, Replica, ReplicaStatus, Runtime, digest
from orchestrator.spec import GatewayRouter, Spec
from orchestrator.state import StateStore

POLL_S = 0.5
WATCH_S = 5.0  # the longest a pod watch blocks, so progress and the deadline are checked that often
SETTLE_S = 0.1  # pods are Ready: the Deployment's status is about to say so
# reasons a container waits with that no amount of waiting fixes
_IMAGE_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}


def spec_to_state(spec: Spec) -> dict[str, Any]:
    """The deployed spec, kept in the state file (the spec file may change before the next verb)."""
    data = spec.model_dump(mode="json")
    policy = spec.version_policy
    data["version_policy"] = ({"latest": policy.num_versions} if policy.kind == "latest" else
                              "all" if policy.kind == "all" else {"specific": list(policy.versions)})
    data["model_uri"] = spec.model_uri.uri if spec.model_uri is not None else None
    return data


def spec_from_state(data: Mapping[str, Any]) -> Spec:
    return Spec.model_validate(dict(data))


# -- model status through the pod proxy -----------------------------------------------------------

def _health(model: str, code: int, body: bytes) -> ModelHealth:
    """TF Serving's status JSON (the same parsing as orchestrator.health, from proxied bytes)."""
    try:
        data = json.loads(body)
    except ValueError:
        return ModelHealth(model, reachable=code < 500,
                           error=f"HTTP {code}: {body[:200].decode(errors='replace')}")
    if not isinstance(data, dict):
        return ModelHealth(model, reachable=True, error=f"HTTP {code}: unexpected answer")
    if "error" in data:
        return ModelHealth(model, reachable=True, error=str(data["error"]))
    if data.get("kind") == "Status":  # the API server answered, not the pod
        return ModelHealth(model, reachable=False, error=str(data.get("message", "")))
    versions = tuple(sorted((
        VersionState(int(v.get("version", 0)), v.get("state", "UNKNOWN"),
                     v.get("status", {}).get("error_code", "OK"), v.get("status", {}).get("error_message", ""))
        for v in data.get("model_version_status", [])), key=lambda v: v.version))
    return ModelHealth(model, reachable=True, versions=versions)


def cluster_wanted(spec: Spec) -> list[int] | None:
    """The versions every pod must have AVAILABLE, when they can be known here.

    `specific` names them; otherwise the local folder `tfsctl package` reads (base_path) lists
    them, checked as servable up front. Without either (a bucket or claim we cannot list), the
    server is the judge: at least one version AVAILABLE and none still loading or failed.
    """
    from orchestrator.runtime.base import wanted_versions
    from orchestrator.savedmodel import list_versions

    if spec.version_policy.kind == "specific":
        return sorted(spec.version_policy.versions)
    if spec.base_path.is_dir() and list_versions(spec.base_path):
        return wanted_versions([spec])[spec.name]
    return None


def _judge(model: str, health: ModelHealth, versions: Sequence[int] | None) -> tuple[bool, bool, str]:
    """(ready, failed, detail) of one pod for one model."""
    if not health.reachable or health.error:
        return False, False, health.error or "no answer"
    available = health.available()
    failed = any(v.state == "END" and v.error_code != "OK" and (versions is None or v.version in versions)
                 for v in health.versions)
    if versions is None:
        ready = bool(available) and all(v.state in (AVAILABLE, "END") for v in health.versions)
    else:
        ready = set(versions) <= available
    states = ", ".join(f"v{v.version} {v.state}" + (f" ({v.error_message})" if v.error_message else "")
                       for v in health.versions) or "no versions yet"
    return ready, failed, f"{model}: {states}"


def refuse_rollout_options(mode: str, metrics: str) -> None:
    """`tfsctl rollout start` options a cluster cannot honour, refused before anything changes."""
    if mode in ("labels", "shadow"):
        why = ("its clients split traffic between the stable and canary labels and report what they "
               "measured in files on this machine" if mode == "labels" else
               "it mirrors the requests the replicas log on this machine, and the tensorflow/serving "
               "image logs none")
        raise RolloutError(f"--mode {mode} is not available on the kubernetes runtime: {why}",
                           fix="leave --mode out (replicas): a canary Deployment, its traffic split by Gateway "
                           "route weights or by the replica ratio")
    if metrics in ("replicas", "prometheus"):
        why = ("it scrapes each replica at an address on this machine, and pod IPs are not reachable from "
               "here" if metrics == "replicas" else
               "it queries the Prometheus `tfsctl monitor up` runs on this machine, which scrapes no pod")
        raise RolloutError(f"--metrics {metrics} is not available on the kubernetes runtime: {why}",
                           fix="leave --metrics out: analysis reads each pod's TF Serving metrics through the API "
                           "server's pod proxy, or the cluster's Prometheus when the spec names it "
                           "(`monitoring: {prometheus_url: URL}`)")


# -- pod diagnosis -------------------------------------------------------------------------------

def _pod_name(pod: Obj) -> str:
    return str(pod["metadata"]["name"])


def _live(pods: Sequence[Obj]) -> list[Obj]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _ready(pod: Obj) -> bool:
    """kubelet's verdict from the readiness probe (which means "model loaded")."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


@dataclass(frozen=True)
class PodProblem:
    """A pod that will not become Ready by waiting: what, why, how to fix."""

    pod: str
    reason: str
    message: str
    fix: str


def diagnose(cluster: Cluster, namespace: str, pod: Obj, *, tail: int = 20) -> tuple[PodProblem | None, str]:
    """The named failure of a pod (and its log tail), or None while it may still come up."""
    name = _pod_name(pod)
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                and cond.get("reason") == "Unschedulable":
            message = cond.get("message", "")
            events = "; ".join(e.get("message", "") for e in cluster.events(namespace, name)
                               if e.get("reason") == "FailedScheduling") or message
            gpu = "nvidia.com/gpu" in message or "nvidia.com/gpu" in events
            return PodProblem(
                name, "Pending (unschedulable)", events,
                "no node has a free GPU: add a GPU node pool with the NVIDIA device plugin, or deploy "
                "with `device: cpu`" if gpu else
                "no node fits the pod's requests: lower `resources:` in the spec or add nodes"), ""
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason", "")
        last = (container.get("lastState") or {}).get("terminated") or {}
        if reason in _IMAGE_REASONS:
            events = "; ".join(e.get("message", "") for e in cluster.events(namespace, name)
                               if e.get("reason") in ("Failed", "BackOff")) or waiting.get("message", "")
            return PodProblem(
                name, reason, f"image {container.get('image')}: {events}",
                "check the image name and tag (`image:`/`tag:` or model_uri image://), that the registry "
                "holds it, and the pull secret; the previous pods keep serving"), ""
        if last.get("reason") == "OOMKilled":
            logs = cluster.pod_log(namespace, name, tail=tail, previous=True)
            return PodProblem(name, "OOMKilled", f"exit code {last.get('exitCode')}",
                              "raise `resources: {memory: ...}` in the spec (the model does not fit)"), logs
        if reason == "CrashLoopBackOff" or (last and not container.get("ready") and reason):
            logs = cluster.pod_log(namespace, name, tail=200, previous=True) or \
                cluster.pod_log(namespace, name, tail=200)
            return PodProblem(
                name, "CrashLoopBackOff",
                f"the server exited with code {last.get('exitCode', '?')} "
                f"({container.get('restartCount', 0)} restarts)",
                "read the log lines below: a bad flag or an unreadable model_uri are the usual causes; "
                "fix the spec and deploy again"), logs
    return None, ""


_ERROR_LINE = re.compile(r"error|unknown|fail|fatal|exception|invalid|refus", re.IGNORECASE)


def log_excerpt(text: str, *, lines: int = 10) -> str:
    """The lines that say what went wrong (a usage text after the error hides it), then the tail."""
    all_lines = text.rstrip().splitlines()
    tail = all_lines[-lines:]
    errors = [line for line in all_lines[:-lines] if _ERROR_LINE.search(line)][-lines:]
    return "\n".join([*errors, "...", *tail] if errors else tail)


def _raise_problem(name: str, problem: PodProblem, logs: str) -> None:
    raise RuntimeFailure(f"{name}: pod {problem.pod} is {problem.reason}: {problem.message}",
                        fix=problem.fix, logs=log_excerpt(logs) if logs else None)


# -- the runtime ---------------------------------------------------------------------------------

class KubernetesRuntime(Runtime):
    name = "kubernetes"

    def __init__(self, store: StateStore | None = None, *, kubeconfig: str | None = None,
                 poll_s: float = POLL_S, watch: bool = True) -> None:
        """`poll_s`: how often what no watch reports is read; `watch`: wait for pods with a watch
        (falls back to polling by itself when the API server cannot watch)."""
        self.store = store or StateStore()
        self.kubeconfig = kubeconfig
        self.poll_s = poll_s
        self.watch = watch
        self._clusters: dict[str | None, Cluster] = {}

    # -- plumbing ------------------------------------------------------------------------------
    def cluster(self, context: str | None, kubeconfig: str | None = None) -> Cluster:
        key = context
        if key not in self._clusters:
            self._clusters[key] = connect(context=context, kubeconfig=kubeconfig or self.kubeconfig)
        return self._clusters[key]

    def _state(self, name: str) -> dict[str, Any]:
        state = self.store.load(name)
        if state is None or state.get("runtime") != self.name:
            known = ", ".join(self.store.names()) or "none"
            raise RuntimeFailure(f"no kubernetes deployment named {name!r} (deployments: {known})",
                                fix=f"deploy it with `tfsctl deploy {name} --runtime kubernetes`")
        return state

    def _open(self, name: str) -> tuple[dict[str, Any], Spec, Cluster]:
        state = self._state(name)
        spec = spec_from_state(state["spec"])
        return state, spec, self.cluster(state.get("context"), state.get("kubeconfig"))

    def _save(self, spec: Spec, **fields: Any) -> dict[str, Any]:
        name = spec.name
        obj = manifests.object_name(spec)
        ns = spec.kubernetes.namespace
        state = self.store.load(name) or {}
        state.update({
            "name": name, "runtime": self.name, "models": [name],
            "spec": spec_to_state(spec), "specs": [str(spec.source)] if spec.source else [],
            "namespace": ns, "context": spec.kubernetes.context, "kubeconfig": self.kubeconfig,
            "object": obj, "router": "gateway" if isinstance(spec.router, GatewayRouter) else bool(spec.router),
            "rest_url": f"http://{obj}.{ns}.svc.cluster.local:{manifests.REST_PORT}",
            "grpc_address": f"{obj}.{ns}.svc.cluster.local:{manifests.GRPC_PORT}",
        })
        state.update(fields)
        state.setdefault("created_at", time.time())
        self.store.save(name, state)
        return state

    def _deadline(self, spec: Spec) -> float:
        return time.monotonic() + spec.health.deadline_s

    # -- waits ---------------------------------------------------------------------------------
    def _rolled_out(self, cluster: Cluster, ns: str, dep_name: str) -> tuple[bool, str, int]:
        dep = cluster.get("Deployment", ns, dep_name)
        if dep is None:
            return False, f"Deployment {dep_name} is gone", 0
        want = int((dep.get("spec") or {}).get("replicas", 1))
        st = dep.get("status") or {}
        generation = dep["metadata"].get("generation", 0)
        observed = st.get("observedGeneration", 0)
        updated, total, available = (int(st.get(k) or 0) for k in ("updatedReplicas", "replicas",
                                                                     "availableReplicas"))
        done = observed >= generation and updated == want and total == want and available == want
        return done, f"rollout: {updated}/{want} updated, {available} available, {total} pods", want

    def _pods_ready(self, cluster: Cluster, ns: str, pods: Sequence[Obj],
                    wanted: Mapping[str, Sequence[int] | None], seen: set[tuple[str, str]] | None = None) -> Readiness:
        """Every pod's model status through the pod proxy; `seen` keeps (pod uid, model) pairs
        already found ready during this wait, so each pod is read until it is ready, then no more."""
        if not pods:
            return Readiness(False, {m: list(v or []) for m, v in wanted.items()}, "no pods yet")
        seen = set() if seen is None else seen
        missing: dict[str, list[int]] = {}
        details: list[str] = []
        failed = False
        for pod in pods:
            uid = str(pod["metadata"].get("uid") or _pod_name(pod))
            for model, versions in wanted.items():
                if (uid, model) in seen:
                    continue
                code, body = cluster.proxy_get(ns, _pod_name(pod), manifests.REST_PORT, f"v1/models/{model}")
                ready, bad, detail = _judge(model, _health(model, code, body), versions)
                failed = failed or bad
                if ready:
                    seen.add((uid, model))
                else:
                    missing.setdefault(model, list(versions or []))
                    details.append(f"{_pod_name(pod)}: {detail}")
        return Readiness(not missing, missing, "; ".join(details) or f"all AVAILABLE on {len(pods)} pod(s)",
                         failed)

    def _wait(self, name: str, spec: Spec, cluster: Cluster, *, role: str, dep_name: str,
              wanted: Mapping[str, Sequence[int] | None], on_poll: OnPoll | None,
              rollout: bool = True) -> list[Obj]:
        """Until the Deployment is rolled out and every pod has every wanted version AVAILABLE."""
        ns = spec.kubernetes.namespace
        end = self._deadline(spec)
        last = Readiness()
        seen: set[tuple[str, str]] = set()
        pod_selector = selector(spec.name, role)
        while True:
            done, detail, want = self._rolled_out(cluster, ns, dep_name) if rollout else (True, "", -1)
            listed, version = cluster.list_pods(ns, pod_selector)
            pods = _live(listed)
            if not pods and done and (want == 0 if rollout else self._scaled_to_zero(cluster, ns, dep_name)):
                return []  # a replica-ratio split at 100 % canary: pods that start later read the config
            for pod in pods:
                problem, logs = diagnose(cluster, ns, pod)
                if problem is not None:
                    _raise_problem(name, problem, logs)
            if not done:
                last = Readiness(False, {}, detail)
            else:
                last = self._pods_ready(cluster, ns, pods, wanted, seen)
                if last.ready:
                    if on_poll:
                        on_poll(last)
                    return pods
                if last.failed:
                    logs = cluster.pod_log(ns, _pod_name(pods[0]), tail=20) if pods else ""
                    raise RuntimeFailure(f"{name}: a version failed to load ({last.detail})",
                                        fix="fix or re-export that version; the previous config was put back",
                                        logs=logs or None)
            if on_poll:
                on_poll(last)
            if time.monotonic() >= end:
                logs = cluster.pod_log(ns, _pod_name(pods[0]), tail=20) if pods else ""
                raise HealthTimeout(
                    f"{name}: not AVAILABLE on every pod after {spec.health.deadline_s:g} s ({last.detail})",
                    fix=f"raise health.deadline_s for big models; `tfsctl status {name}` and "
                    f"`tfsctl logs {name}` show each pod", logs=logs or None)
            # Waiting for pods to start or become Ready: a watch wakes us when one changes. Once
            # they are Ready, the Deployment's status follows within moments (polled briefly), and
            # the servers' model loads change no object at all (polled).
            settling = not done and len(pods) >= want and all(map(_ready, pods))
            if not done and not settling and self.watch:
                changed = cluster.watch_pods(ns, pod_selector, version, min(WATCH_S, max(0.0, end - time.monotonic())))
                if changed is None:
                    self.watch = False  # this API server cannot watch: poll from now on
                if changed is not None:
                    continue
            time.sleep(min(self.poll_s, SETTLE_S) if settling else self.poll_s)

    def _scaled_to_zero(self, cluster: Cluster, ns: str, dep_name: str) -> bool:
        dep = cluster.get("Deployment", ns, dep_name)
        return dep is not None and int((dep.get("spec") or {}).get("replicas", 1)) == 0

    # -- deploy / reload -------------------------------------------------------------------------
    def deploy(self, specs: Sequence[Spec], *, on_poll: OnPoll | None = None) -> Deployment:
        if len(specs) != 1:
            raise RuntimeFailure("the kubernetes runtime serves one model per deployment",
                                fix="deploy each NAME on its own (`tfsctl deploy A --runtime kubernetes`, ...)")
        spec = specs[0]
        name = spec.name
        previous = self.store.load(name)
        if previous is not None and previous.get("runtime") != self.name:
            raise RuntimeFailure(
                f"{name} is deployed on the {previous.get('runtime')} runtime",
                fix=f"stop it first (`tfsctl stop {name}`), or deploy with `--runtime {previous.get('runtime')}`")
        if previous is not None and (previous.get("namespace"), previous.get("context")) != \
                (spec.kubernetes.namespace, spec.kubernetes.context):
            raise RuntimeFailure(
                f"{name} is deployed in namespace {previous.get('namespace')}"
                + (f" (context {previous.get('context')})" if previous.get("context") else "")
                + f", not {spec.kubernetes.namespace}",
                fix=f"`tfsctl reload {name}` updates it where it is; to move it, `tfsctl stop {name}` first")
        objects = manifests.render(spec)  # refuses a spec without model_uri, with the advice
        versions = cluster_wanted(spec)
        cluster = self.cluster(spec.kubernetes.context)
        ns = spec.kubernetes.namespace
        if isinstance(spec.router, GatewayRouter):
            self._check_gateway(cluster, spec)
        by_kind = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        obj = manifests.object_name(spec)
        cm = by_kind[("ConfigMap", f"{obj}-config")]
        dep = by_kind[("Deployment", obj)]
        current_cm = cluster.get("ConfigMap", ns, f"{obj}-config")
        current_dep = cluster.get("Deployment", ns, obj)
        if previous is not None and previous.get("canary") and current_dep is not None:
            objects = self._keep_split(cluster, spec, objects, current_dep)
            dep = next(o for o in objects if (o["kind"], o["metadata"]["name"]) == ("Deployment", obj))
        others = [o for o in objects if o is not cm and o is not dep]
        wanted = {name: versions}
        dep_hash = digest(by_kind[("Deployment", obj)])  # the spec's, whatever split a canary keeps

        if current_dep is None:
            for o in [cm, dep, *others]:
                cluster.apply(o)
            self._save(spec, deployment_hash=dep_hash, deployment=dep, config=cm["data"], canary=None)
            self._wait(name, spec, cluster, role="stable", dep_name=obj, wanted=wanted, on_poll=on_poll)
            return self._outcome(spec, "created")

        dep_changed = previous is None or previous.get("deployment_hash") != dep_hash
        config_changed = (current_cm or {}).get("data") != cm["data"]
        for o in others:
            cluster.apply(o)
        if dep_changed:
            old_dep = (previous or {}).get("deployment")
            old_data = (current_cm or {}).get("data")
            cluster.apply(cm)
            cluster.apply(dep)
            try:
                self._wait(name, spec, cluster, role="stable", dep_name=obj, wanted=wanted, on_poll=on_poll)
            except BaseException:
                # maxUnavailable 0 kept the old pods serving: put the old template and config back
                if old_data is not None:
                    cluster.apply({**cm, "data": old_data})
                if old_dep is not None:
                    cluster.apply(old_dep)
                raise
            self._save(spec, deployment_hash=dep_hash, deployment=dep, config=cm["data"])
            return self._outcome(spec, "replaced", "the Deployment rolled (image, flags or resources changed)")
        if not config_changed:
            self._save(spec)
            return self._outcome(spec, "unchanged")
        self._hot_reload(spec, cluster, cm, (current_cm or {}).get("data") or {}, previous, on_poll)
        self._save(spec, config=cm["data"])
        return self._outcome(spec, "reloaded")

    def _keep_split(self, cluster: Cluster, spec: Spec, objects: list[Obj], current_dep: Obj) -> list[Obj]:
        """Deploy during a canary keeps the rollout's traffic split: the routes' current weights
        (a fresh render says 100 % stable) and the stable replica count a replica-ratio split set."""
        obj = manifests.object_name(spec)
        kept: dict[tuple[str, str], Obj] = {}
        if isinstance(spec.router, GatewayRouter):
            weight = GatewayRoutes(cluster, spec, obj).get_weights()["canary"]
            kept = {(r["kind"], r["metadata"]["name"]): r for r in manifests.routes(spec, obj, weight)}
        out = []
        for o in objects:
            o = kept.get((o["kind"], o["metadata"]["name"]), o)
            if (o["kind"], o["metadata"]["name"]) == ("Deployment", obj) and spec.autoscale is None:
                replicas = (current_dep.get("spec") or {}).get("replicas")
                if replicas is not None:
                    o = {**o, "spec": {**o["spec"], "replicas": int(replicas)}}
            out.append(o)
        return out

    def _outcome(self, spec: Spec, action: str, note: str = "") -> Deployment:
        state = self._state(spec.name)
        pods = self.replicas(spec.name)
        return Deployment(spec.name, self.name, action, state["rest_url"], state["grpc_address"],
                          [{"index": i, "pod": r.name, "role": r.role, "version": r.version, "host": r.host,
                            "rest_port": r.rest_port, "grpc_port": r.grpc_port} for i, r in enumerate(pods)], note)

    def _check_gateway(self, cluster: Cluster, spec: Spec) -> None:
        router = spec.router
        assert isinstance(router, GatewayRouter)
        gw_ns = router.namespace or spec.kubernetes.namespace
        if cluster.get("Gateway", gw_ns, router.gateway) is None:
            raise RuntimeFailure(
                f"{spec.name}: Gateway {router.gateway!r} not found in namespace {gw_ns} (or the Gateway API "
                "CRDs are not installed); an HTTPRoute without its Gateway routes nothing",
                fix="create the Gateway (Istio, Envoy Gateway, ... provide a GatewayClass), fix "
                "`router: {gateway: NAME, namespace: NS}`, or use `router: true` for the replica ratio")

    def _hot_reload(self, spec: Spec, cluster: Cluster, cm: Obj, old_data: Mapping[str, str],
                    previous: Mapping[str, Any] | None, on_poll: OnPoll | None) -> None:
        """ConfigMap in place, in TF Serving-safe steps, waiting on every pod; on failure the old one."""
        name = spec.name
        versions = cluster_wanted(spec)
        steps = self._label_steps(spec, cm["data"][MODELS_CONFIG], previous, versions)
        try:
            for models_config, wait_for in steps:
                cluster.apply({**cm, "data": {**cm["data"], MODELS_CONFIG: models_config}})
                self._wait(name, spec, cluster, role="stable", dep_name=manifests.object_name(spec),
                           wanted={name: wait_for}, on_poll=on_poll, rollout=False)
            cluster.apply(cm)  # the batching and monitoring files with the last step
        except BaseException:
            if old_data:
                cluster.apply({**cm, "data": dict(old_data)})
            raise

    def _label_steps(self, spec: Spec, final: str, previous: Mapping[str, Any] | None,
                     versions: list[int] | None) -> list[tuple[str, list[int] | None]]:
        """[(models.config, versions to wait for)]: a label may only name an AVAILABLE version."""
        old_spec = spec_from_state(previous["spec"]) if previous and previous.get("spec") else None
        moved = {label: v for label, v in spec.version_labels.items()
                 if old_spec is None or old_spec.version_labels.get(label) != v}
        if not moved or old_spec is None or versions is None:
            return [(final, versions)]
        old_labels = {label: v for label, v in old_spec.version_labels.items() if label in spec.version_labels}
        first_versions = sorted(set(versions) | set(old_labels.values()))
        first = models_config_text([model_config(spec, manifests.cluster_model_path, versions=first_versions,
                                                 labels=old_labels)])
        return [(first, sorted(set(moved.values()))), (final, versions)]

    def reload(self, specs: Sequence[Spec], *, on_poll: OnPoll | None = None) -> Deployment:
        """The spec again, where the deployment lives (its namespace and context, as deployed)."""
        state = self._state(specs[0].name)
        where = specs[0].kubernetes.model_copy(update={"namespace": state["namespace"],
                                                       "context": state.get("context")})
        return self.deploy([specs[0].model_copy(update={"kubernetes": where}), *specs[1:]], on_poll=on_poll)

    @property
    def model_path(self) -> Callable[[Spec], str]:
        """Plans for a cluster name the pods' model folders (`manifests.cluster_model_path`)."""
        return manifests.cluster_model_path

    def apply_label_steps(self, name: str, steps: Sequence[ReloadStep], *, spec: Spec | None = None,
                          replicas: Sequence[Replica] | None = None, on_poll: OnPoll | None = None) -> None:
        """plan.plan_label_move's steps as ConfigMap edits: one config reaches every pod, so a
        step cannot be applied to some replicas only."""
        if replicas is not None:
            raise RuntimeFailure(f"{name}: a kubernetes ConfigMap reaches every pod; label steps "
                                 "cannot target some replicas", fix="apply the steps to the whole deployment")
        state, loaded, cluster = self._open(name)
        spec = spec or loaded
        cm_name = f"{state['object']}-config"
        current = cluster.get("ConfigMap", spec.kubernetes.namespace, cm_name)
        if current is None:
            raise RuntimeFailure(f"{name}: ConfigMap {cm_name} is missing", fix=f"deploy again: `tfsctl deploy {name}`")
        old_data = dict(current.get("data") or {})
        cm = manifests.config_map(spec, manifests.cluster_plan(spec), cm_name)
        try:
            for step in steps:
                cm["data"] = {**old_data, MODELS_CONFIG: step.models_config}
                cluster.apply(cm)
                wanted: dict[str, list[int] | None] = {}
                for m, v in [*step.wait_available.items(), *step.then_available.items()]:
                    wanted[m] = sorted({*(wanted.get(m) or []), *v})
                wanted = wanted or {name: None}
                self._wait(name, spec, cluster, role="stable", dep_name=state["object"],
                           wanted=wanted, on_poll=on_poll, rollout=False)
        except BaseException:
            cluster.apply({**cm, "data": old_data})
            raise
        self._save(spec, config=cm["data"])

    # -- scale / status / logs / stop / ls -------------------------------------------------------
    def scale(self, name: str, replicas: int, *, on_poll: OnPoll | None = None) -> Deployment:
        state, spec, cluster = self._open(name)
        if spec.autoscale is not None:
            raise RuntimeFailure(f"{name} is autoscaled (HorizontalPodAutoscaler {state['object']}): it owns "
                                "the replica count", fix="change `autoscale: {min, max}` in the spec and deploy")
        if not 1 <= replicas <= 64:
            raise RuntimeFailure(f"cannot scale {name} to {replicas}", fix="use 1 to 64 replicas")
        spec = spec.model_copy(update={"replicas": replicas})
        dep = manifests.render(spec)[1]
        cluster.apply(dep)
        self._save(spec, deployment_hash=digest(dep), deployment=dep)
        self._wait(name, spec, cluster, role="stable", dep_name=state["object"],
                   wanted={name: cluster_wanted(spec)}, on_poll=on_poll)
        return self._outcome(spec, "scaled", f"{replicas} replica(s)")

    def _pods(self, name: str) -> tuple[dict[str, Any], Cluster, list[Obj]]:
        state, _, cluster = self._open(name)
        pods = _live(cluster.pods(state["namespace"], selector(name)))
        role_order = {"stable": 0, "canary": 1}
        pods.sort(key=lambda p: (role_order.get(p["metadata"].get("labels", {}).get(manifests.LABEL_ROLE, ""), 2),
                                 _pod_name(p)))
        return state, cluster, pods

    def replicas(self, name: str) -> list[Replica]:
        state, _, pods = self._pods(name)
        canary = state.get("canary") or {}
        out = []
        for pod in pods:
            role = pod["metadata"].get("labels", {}).get(manifests.LABEL_ROLE, "stable")
            out.append(Replica(name=_pod_name(pod), role=role,
                               version=canary.get("version") if role == "canary" else None,
                               host=(pod.get("status") or {}).get("podIP") or "",
                               rest_port=manifests.REST_PORT, grpc_port=manifests.GRPC_PORT))
        return out

    def status(self, name: str) -> list[ReplicaStatus]:
        state, cluster, pods = self._pods(name)
        out = []
        for index, pod in enumerate(pods):
            role = pod["metadata"].get("labels", {}).get(manifests.LABEL_ROLE, "stable")
            phase = (pod.get("status") or {}).get("phase", "Unknown")
            problem, _ = diagnose(cluster, state["namespace"], pod, tail=0)
            running = phase == "Running" and problem is None
            models: tuple[ModelHealth, ...] = ()
            if running:
                models = tuple(_health(m, *cluster.proxy_get(state["namespace"], _pod_name(pod),
                                                             manifests.REST_PORT, f"v1/models/{m}"))
                               for m in state["models"])
            detail = f"{role}; {problem.reason}: {problem.message}" if problem else f"{role}; {phase}"
            out.append(ReplicaStatus(index, _pod_name(pod), running, manifests.GRPC_PORT, manifests.REST_PORT,
                                     models, detail))
        return out

    def ps(self, name: str) -> list[dict[str, Any]]:
        """One row per pod: role, image, phase or the named problem, restarts."""
        state, cluster, pods = self._pods(name)
        rows = []
        for index, pod in enumerate(pods):
            containers = (pod.get("status") or {}).get("containerStatuses") or [{}]
            problem, _ = diagnose(cluster, state["namespace"], pod, tail=0)
            phase = (pod.get("status") or {}).get("phase", "Unknown")
            rows.append({"replica": index, "id": _pod_name(pod),
                         "name": pod["metadata"].get("labels", {}).get(manifests.LABEL_ROLE, ""),
                         "image": pod["spec"]["containers"][0].get("image", ""),
                         "status": problem.reason if problem else phase.lower(),
                         "restarts": int(containers[0].get("restartCount") or 0),
                         "grpc_port": manifests.GRPC_PORT, "rest_port": manifests.REST_PORT,
                         "detail": (pod.get("status") or {}).get("podIP", "")})
        return rows

    def pod_metrics(self, name: str, role: str | None = None) -> dict[str, str]:
        """Each pod's Prometheus text (the spec's monitoring path) through the pod proxy, for analysis."""
        state, spec, cluster = self._open(name)
        if not spec.monitoring.prometheus:
            raise RuntimeFailure(f"{name} exports no Prometheus metrics",
                                fix="set `monitoring: {prometheus: true}` in the spec and deploy")
        out = {}
        for pod in _live(cluster.pods(state["namespace"], selector(name, role))):
            code, body = cluster.proxy_get(state["namespace"], _pod_name(pod), manifests.REST_PORT,
                                           spec.monitoring.path)
            if code == 200:
                out[_pod_name(pod)] = body.decode(errors="replace")
        return out

    def logs(self, name: str, *, tail: int = 100) -> dict[int, str]:
        state, cluster, pods = self._pods(name)
        return {i: f"[{_pod_name(p)}]\n" + cluster.pod_log(state["namespace"], _pod_name(p), tail=tail)
                for i, p in enumerate(pods)}

    def stop(self, name: str) -> list[str]:
        """Delete only objects carrying our labels (managed-by tfsctl and this deployment)."""
        state, _, cluster = self._open(name)
        ns = state["namespace"]
        gone = []
        for kind in ("HTTPRoute", "GRPCRoute", "ServiceMonitor", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                     "Service", "Deployment", "ConfigMap"):
            for obj in cluster.list_objects(kind, ns, selector(name)):
                if cluster.delete(kind, ns, obj["metadata"]["name"]):
                    gone.append(f"{kind}/{obj['metadata']['name']}")
        self.store.delete(name)
        return gone

    # -- canary ------------------------------------------------------------------------------
    def start_canary(self, name: str, version: int, *, count: int = 1) -> list[Replica]:
        """A second Deployment serving only `version`; returns once it is AVAILABLE on every pod."""
        state, spec, cluster = self._open(name)
        canary = [o for o in manifests.render(spec, canary_version=version, canary_replicas=count)
                  if o["metadata"]["labels"].get(manifests.LABEL_ROLE) == "canary"]
        for obj in canary:
            cluster.apply(obj)
        self._save(spec, canary={"version": version, "count": count})
        try:
            self._wait(name, spec, cluster, role="canary", dep_name=f"{state['object']}-canary",
                       wanted={name: [version]}, on_poll=None)
        except BaseException:
            self.remove_canary(name)  # stable never changed: it keeps serving
            raise
        return [r for r in self.replicas(name) if r.role == "canary"]

    def canary_alive(self, name: str) -> bool:
        """The canary Deployment exists and none of its pods has a named problem (crash loop, OOM)."""
        state, spec, cluster = self._open(name)
        ns = spec.kubernetes.namespace
        if cluster.get("Deployment", ns, f"{state['object']}-canary") is None:
            return False
        return all(diagnose(cluster, ns, pod, tail=0)[0] is None
                   for pod in _live(cluster.pods(ns, selector(name, "canary"))))

    def remove_canary(self, name: str) -> None:
        """Idempotent: delete the canary's objects; all traffic back on stable."""
        state, spec, cluster = self._open(name)
        ns, obj = spec.kubernetes.namespace, state["object"]
        if isinstance(spec.router, GatewayRouter):
            for route in manifests.routes(spec, obj, 0):
                cluster.apply(route)
        cluster.delete("Deployment", ns, f"{obj}-canary")
        cluster.delete("Service", ns, f"{obj}-canary")
        cluster.delete("ConfigMap", ns, f"{obj}-canary-config")
        stable = cluster.get("Deployment", ns, obj)
        if stable is not None and spec.autoscale is None and \
                (stable.get("spec") or {}).get("replicas") != spec.replicas:
            cluster.apply(manifests.render(spec)[1])  # undo a replica-ratio split
            self._wait_rollout(cluster, spec, obj)
        self._save(spec, canary=None)

    def _wait_rollout(self, cluster: Cluster, spec: Spec, dep_name: str) -> None:
        ns = spec.kubernetes.namespace
        pod_selector = selector(spec.name, "canary" if dep_name.endswith("-canary") else "stable")
        end = self._deadline(spec)
        while True:
            done, detail, want = self._rolled_out(cluster, ns, dep_name)
            if done:
                return
            if time.monotonic() >= end:
                raise HealthTimeout(f"{spec.name}: {dep_name} did not reach its replica count ({detail})",
                                    fix=f"`tfsctl status {spec.name}` shows the pods")
            listed, version = cluster.list_pods(ns, pod_selector)
            pods = _live(listed)
            settling = len(pods) == want and all(map(_ready, pods))  # only the status is still to follow
            if not settling and self.watch:
                changed = cluster.watch_pods(ns, pod_selector, version, min(WATCH_S, max(0.0, end - time.monotonic())))
                if changed is None:
                    self.watch = False
                if changed is not None:
                    continue
            time.sleep(min(self.poll_s, SETTLE_S) if settling else self.poll_s)

    def router(self, name: str) -> Router:
        state, spec, cluster = self._open(name)
        if isinstance(spec.router, GatewayRouter):
            return GatewayRoutes(cluster, spec, state["object"])
        count = (state.get("canary") or {}).get("count", 1)
        return ReplicaRatio(self, cluster, spec, state["object"], total=spec.replicas + count)


# -- routers -------------------------------------------------------------------------------------

def _check_weights(weights: Mapping[str, int]) -> int:
    if set(weights) - {"stable", "canary"} or sum(weights.values()) != 100 or \
            any(not 0 <= w <= 100 for w in weights.values()):
        raise RuntimeFailure(f"weights {dict(weights)} are not a stable/canary split",
                            fix="give {'stable': S, 'canary': C} with S + C = 100")
    return int(weights.get("canary", 100 - weights.get("stable", 100)))


class _LabelledCanary:
    """What both cluster routers share: canary pods are found by their labels (the route's or the
    Service's selector), so the Router protocol's hand-offs have nothing to tell them."""

    def set_weights(self, weights: Mapping[str, int]) -> None:
        raise NotImplementedError

    def route_canary(self, replicas: Sequence[Backend], version: int | None = None) -> None:
        """Nothing to add: the canary Deployment's pods carry the selected labels."""

    def set_stable_version(self, version: int) -> None:
        """Nothing to learn: readiness probes follow each pod's own config."""

    def drain_canary(self) -> None:
        self.set_weights({"stable": 100, "canary": 0})

    def close(self) -> None:
        pass


class GatewayRoutes(_LabelledCanary):
    """Gateway API HTTPRoute + GRPCRoute backendRefs weights: 1 % steps, any implementation."""

    def __init__(self, cluster: Cluster, spec: Spec, obj: str) -> None:
        self.cluster, self.spec, self.obj = cluster, spec, obj

    def set_weights(self, weights: Mapping[str, int]) -> None:
        canary = _check_weights(weights)
        for route in manifests.routes(self.spec, self.obj, canary):
            self.cluster.apply(route)

    def get_weights(self) -> dict[str, int]:
        route = self.cluster.get("HTTPRoute", self.spec.kubernetes.namespace, self.obj)
        refs = (((route or {}).get("spec") or {}).get("rules") or [{}])[0].get("backendRefs", [])
        weights = {"stable": 100, "canary": 0}
        for ref in refs:
            role = "canary" if ref["name"].endswith("-canary") else "stable"
            weights[role] = int(ref.get("weight", 1))
        return weights

    def endpoint(self) -> tuple[str, int, int]:
        router = self.spec.router
        assert isinstance(router, GatewayRouter)
        ns = router.namespace or self.spec.kubernetes.namespace
        gateway = self.cluster.get("Gateway", ns, router.gateway) or {}
        addresses = (gateway.get("status") or {}).get("addresses") or []
        host = addresses[0]["value"] if addresses else f"{router.gateway}.{ns}"
        listeners = (gateway.get("spec") or {}).get("listeners") or [{"port": 80}]
        port = int(listeners[0].get("port", 80))
        return host, port, port


class ReplicaRatio(_LabelledCanary):
    """No Gateway: the one Service spreads over stable and canary pods, so weight = pod share.

    With T pods in all (the spec's replicas + the canary's count) a weight moves in steps of
    100/T percent: 2 pods give 0/50/100, 4 pods 25 % steps. Coarse, and said so in the README.
    """

    def __init__(self, runtime: KubernetesRuntime, cluster: Cluster, spec: Spec, obj: str, *, total: int) -> None:
        self.runtime, self.cluster, self.spec, self.obj, self.total = runtime, cluster, spec, obj, total

    def split(self, canary_weight: int) -> tuple[int, int]:
        canary = round(self.total * canary_weight / 100)
        if 0 < canary_weight < 100:
            canary = min(max(canary, 1), self.total - 1)
        return self.total - canary, canary

    def set_weights(self, weights: Mapping[str, int]) -> None:
        stable, canary = self.split(_check_weights(weights))
        ns = self.spec.kubernetes.namespace
        wanted = {self.obj: stable, f"{self.obj}-canary": canary}
        current = {d: int(((self.cluster.get("Deployment", ns, d) or {}).get("spec") or {}).get("replicas", 0))
                   for d in wanted}
        # the side that grows first, Ready, then the side that shrinks: never a moment without pods
        for dep_name in sorted(wanted, key=lambda d: wanted[d] <= current[d]):
            self.cluster.merge_patch("Deployment", ns, dep_name, {"spec": {"replicas": wanted[dep_name]}})
            self.runtime._wait_rollout(self.cluster, self.spec, dep_name)

    def get_weights(self) -> dict[str, int]:
        ns = self.spec.kubernetes.namespace
        counts = {}
        for role, dep_name in (("stable", self.obj), ("canary", f"{self.obj}-canary")):
            dep = self.cluster.get("Deployment", ns, dep_name)
            counts[role] = int(((dep or {}).get("spec") or {}).get("replicas", 0)) if dep else 0
        total = sum(counts.values()) or 1
        canary = round(100 * counts["canary"] / total)
        return {"stable": 100 - canary, "canary": canary}

    def endpoint(self) -> tuple[str, int, int]:
        ns = self.spec.kubernetes.namespace
        return f"{self.obj}.{ns}.svc.cluster.local", manifests.REST_PORT, manifests.GRPC_PORT

