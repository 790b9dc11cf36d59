"""The cluster through the official client: connect, server-side apply, list, delete, pod proxy.

Every API failure becomes a RuntimeFailure that names what failed and how to fix it (no
kubeconfig, an unreachable API server, RBAC forbidden, a missing namespace), so callers and
the CLI never see a raw ApiException or urllib3 traceback.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import RuntimeFailure
from orchestrator.kube.manifests import LABEL_DEPLOYMENT, LABEL_MANAGED_BY, MANAGED_BY

Obj = dict[str, Any]
FIELD_MANAGER = "tfsctl"
APPLY = "application/apply-patch+yaml"

# kind → (group, version, plural); group "" is the core API
KINDS: dict[str, tuple[str, str, str]] = {
    "ConfigMap": ("", "v1", "configmaps"),
    "Service": ("", "v1", "services"),
    "Deployment": ("apps", "v1", "deployments"),
    "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
    "ServiceMonitor": ("monitoring.coreos.com", "v1", "servicemonitors"),
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "GRPCRoute": ("gateway.networking.k8s.io", "v1", "grpcroutes"),
    "Gateway": ("gateway.networking.k8s.io", "v1", "gateways"),
}
CRDS = {"ServiceMonitor", "HTTPRoute", "GRPCRoute", "Gateway"}


def _kubernetes() -> Any:
    try:
        import kubernetes
    except ImportError:
        raise RuntimeFailure("the kubernetes runtime needs the official client",
                            fix="pip install 'tfserving-orchestrator[kubernetes]'") from None
    return kubernetes


@dataclass
class Cluster:
    """One API server, reached with a kubeconfig context (or the in-cluster service account)."""

    api_client: Any
    where: str  # "context C (server URL)", for messages

    @property
    def core(self) -> Any:
        return _kubernetes().client.CoreV1Api(self.api_client)

    @property
    def custom(self) -> Any:
        return _kubernetes().client.CustomObjectsApi(self.api_client)

    # -- errors ------------------------------------------------------------------------------
    @contextmanager
    def calling(self, what: str, namespace: str) -> Iterator[None]:
        """Turn the client's exceptions into named errors with a fix."""
        kubernetes = _kubernetes()
        try:
            yield
        except kubernetes.client.ApiException as exc:
            raise api_error(exc, what, namespace, self.where) from None
        except Exception as exc:  # urllib3: refused, DNS, TLS, timeouts
            if type(exc).__module__.startswith(("urllib3", "ssl", "socket")) or isinstance(exc, OSError):
                raise RuntimeFailure(
                    f"cannot reach the Kubernetes API server at {self.where} ({what}): "
                    f"{type(exc).__name__}: {str(exc)[:200]}",
                    fix="check the cluster is up and the kubeconfig's server URL (`kubectl cluster-info`), "
                    "or pick another context with `kubernetes: {context: NAME}` in the spec",
                ) from None
            raise

    # -- verbs -------------------------------------------------------------------------------
    def apply(self, obj: Obj) -> Obj:
        """Server-side apply with field manager tfsctl (force: tfsctl owns what it renders)."""
        kind, meta = obj["kind"], obj["metadata"]
        group, version, plural = KINDS[kind]
        ns, name = meta["namespace"], meta["name"]
        with self.calling(f"apply {kind} {name}", ns):
            if group == "":
                method = getattr(self.core, f"patch_namespaced_{_snake(kind)}")
                raw = method(name, ns, obj, field_manager=FIELD_MANAGER, force=True,
                             _content_type=APPLY, _preload_content=False)
            else:
                raw = self.custom.patch_namespaced_custom_object(
                    group, version, ns, plural, name, obj, field_manager=FIELD_MANAGER, force=True,
                    _content_type=APPLY, _preload_content=False)
        return dict(json.loads(raw.data))

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        group, version, plural = KINDS[kind]
        kubernetes = _kubernetes()
        with self.calling(f"read {kind} {name}", namespace):
            try:
                if group == "":
                    raw = getattr(self.core, f"read_namespaced_{_snake(kind)}")(
                        name, namespace, _preload_content=False)
                else:
                    raw = self.custom.get_namespaced_custom_object(
                        group, version, namespace, plural, name, _preload_content=False)
            except kubernetes.client.ApiException as exc:
                if exc.status == 404 and not _namespace_missing(exc):
                    return None  # absent (or its CRD is not installed)
                raise
        return dict(json.loads(raw.data))

    def list_objects(self, kind: str, namespace: str, selector: str) -> list[Obj]:
        group, version, plural = KINDS[kind]
        kubernetes = _kubernetes()
        with self.calling(f"list {plural}", namespace):
            try:
                if group == "":
                    raw = getattr(self.core, f"list_namespaced_{_snake(kind)}")(
                        namespace, label_selector=selector, _preload_content=False)
                else:
                    raw = self.custom.list_namespaced_custom_object(
                        group, version, namespace, plural, label_selector=selector, _preload_content=False)
            except kubernetes.client.ApiException as exc:
                if exc.status == 404 and kind in CRDS and not _namespace_missing(exc):
                    return []  # that CRD is not installed: nothing of ours can exist
                raise
        return list(json.loads(raw.data).get("items", []))

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """True when it was there (absent is fine: stop and remove_canary are idempotent)."""
        group, version, plural = KINDS[kind]
        kubernetes = _kubernetes()
        with self.calling(f"delete {kind} {name}", namespace):
            try:
                if group == "":
                    getattr(self.core, f"delete_namespaced_{_snake(kind)}")(name, namespace, _preload_content=False)
                else:
                    self.custom.delete_namespaced_custom_object(group, version, namespace, plural, name,
                                                                _preload_content=False)
            except kubernetes.client.ApiException as exc:
                if exc.status == 404 and not _namespace_missing(exc):
                    return False
                raise
        return True

    def merge_patch(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        group, version, plural = KINDS[kind]
        with self.calling(f"patch {kind} {name}", namespace):
            raw = self.custom.patch_namespaced_custom_object(
                group, version, namespace, plural, name, patch, field_manager=FIELD_MANAGER,
                _content_type="application/merge-patch+json", _preload_content=False)
        return dict(json.loads(raw.data))

    def pods(self, namespace: str, selector: str) -> list[Obj]:
        return self.list_pods(namespace, selector)[0]

    def list_pods(self, namespace: str, selector: str) -> tuple[list[Obj], str]:
        """The pods and the list's resourceVersion (where a watch of what changes next starts)."""
        with self.calling("list pods", namespace):
            raw = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        data = json.loads(raw.data)
        return list(data.get("items", [])), str((data.get("metadata") or {}).get("resourceVersion") or "")

    def watch_pods(self, namespace: str, selector: str, resource_version: str, timeout_s: float) -> bool | None:
        """Block until a selected pod changes after `resource_version` (True) or `timeout_s` passes
        (False); None when this API server cannot watch, so the caller polls instead."""
        kubernetes = _kubernetes()
        seconds = max(1, math.ceil(timeout_s))
        watch = kubernetes.watch.Watch()
        with self.calling("watch pods", namespace):
            try:
                stream = watch.stream(self.core.list_namespaced_pod, namespace, label_selector=selector,
                                      resource_version=resource_version or None, timeout_seconds=seconds,
                                      _request_timeout=seconds + 5, deserialize=False)
                started = time.monotonic()
                try:
                    for event in stream:
                        if isinstance(event, dict) and "type" in event:
                            return True
                        return None  # an answer that is no watch event: the server ignored ?watch
                finally:
                    stream.close()
                if time.monotonic() - started < seconds / 2:
                    return None  # ended at once with nothing: an answer, not a watch
            except kubernetes.client.ApiException as exc:
                if exc.status in (401, 403):
                    raise
                return True if exc.status == 410 else None  # 410: too old, so something changed: list again
            except (ValueError, KeyError):
                return None  # not JSON lines of events: no watch here
            except Exception as exc:  # the stream's read timeout: nothing changed
                if "Timeout" in type(exc).__name__ + type(getattr(exc, "reason", None)).__name__:
                    return False
                raise
        return False

    def events(self, namespace: str, pod: str) -> list[Obj]:
        with self.calling("list events", namespace):
            raw = self.core.list_namespaced_event(namespace, _preload_content=False)
        return [e for e in json.loads(raw.data).get("items", [])
                if e.get("involvedObject", {}).get("name") == pod]

    def pod_log(self, namespace: str, pod: str, *, tail: int, previous: bool = False) -> str:
        kubernetes = _kubernetes()
        try:
            with self.calling(f"read the log of pod {pod}", namespace):
                try:
                    raw = self.core.read_namespaced_pod_log(pod, namespace, tail_lines=tail, previous=previous or None,
                                                            _preload_content=False)
                except kubernetes.client.ApiException as exc:
                    if exc.status in (400, 404):  # still waiting to start, or gone
                        return ""
                    raise
        except RuntimeFailure as exc:
            return f"(log unavailable: {exc.message})"
        return str(raw.data.decode(errors="replace"))

    def proxy_get(self, namespace: str, pod: str, port: int, path: str) -> tuple[int, bytes]:
        """GET through the API server's pod proxy: /api/v1/namespaces/NS/pods/POD:PORT/proxy/PATH."""
        kubernetes = _kubernetes()
        with self.calling(f"read {path} of pod {pod} through the pod proxy", namespace):
            try:
                raw = self.core.connect_get_namespaced_pod_proxy_with_path(
                    f"{pod}:{port}", namespace, path.lstrip("/"), _preload_content=False,
                    _request_timeout=5)
            except kubernetes.client.ApiException as exc:
                if exc.status in (401, 403):
                    raise
                return exc.status, (exc.body.encode() if isinstance(exc.body, str) else exc.body or b"")
            except Exception as exc:  # a slow pod is "no answer yet", not an unreachable API server
                if "Timeout" not in type(exc).__name__ + type(getattr(exc, "reason", None)).__name__:
                    raise
                return 504, json.dumps({"kind": "Status", "message": f"pod {pod} did not answer in 5 s"}).encode()
        return int(raw.status), bytes(raw.data)


def _snake(kind: str) -> str:
    return {"ConfigMap": "config_map", "Service": "service"}[kind]


def _message(exc: Any) -> str:
    """The Status message the API server sent (or what there is)."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except ValueError:
        return str(exc.body)[:200]
    return str(body.get("message", "") if isinstance(body, dict) else "") or str(exc.reason or "")


def _namespace_missing(exc: Any) -> bool:
    message = _message(exc)
    return exc.status == 404 and message.startswith('namespaces "') and message.endswith("not found")


def api_error(exc: Any, what: str, namespace: str, where: str) -> RuntimeFailure:
    message = _message(exc)
    if exc.status == 403:
        return RuntimeFailure(
            f"forbidden by the cluster's RBAC ({what} in namespace {namespace}): {message}",
            fix=f"grant the kubeconfig's user a Role in {namespace} allowing get/list/watch/create/patch/"
            "delete on configmaps, services, deployments, poddisruptionbudgets, "
            "horizontalpodautoscalers, pods, pods/log, pods/proxy, events (and httproutes, grpcroutes "
            "for a Gateway); `kubectl auth can-i --list -n " + namespace + "` shows what it has",
        )
    if exc.status == 401:
        return RuntimeFailure(f"the API server at {where} refused the credentials ({what}): {message}",
                             fix="refresh the kubeconfig's credentials (log in again to the cluster)")
    if exc.status == 404 and _namespace_missing(exc):
        return RuntimeFailure(f"namespace {namespace!r} does not exist on {where}",
                             fix=f"create it (`kubectl create namespace {namespace}`), or set "
                             "`kubernetes: {namespace: NAME}` in the spec / pass --namespace")
    if exc.status == 404:
        return RuntimeFailure(f"{what}: not found on {where} ({message})",
                             fix="install the CRD it needs (Gateway API for routes, prometheus-operator "
                             "for ServiceMonitor), or drop that setting from the spec")
    return RuntimeFailure(f"{what} failed on {where}: HTTP {exc.status}: {message}",
                         fix="read the message above; `tfsctl render NAME --target kubernetes` shows "
                         "what was sent")


def connect(*, context: str | None = None, kubeconfig: str | None = None) -> Cluster:
    """A kubeconfig (explicit, $KUBECONFIG or ~/.kube/config) or, inside a pod, the service account."""
    kubernetes = _kubernetes()
    config = kubernetes.config
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(
        Path.home() / ".kube" / "config")
    if Path(path).expanduser().exists():
        try:
            api_client = config.new_client_from_config(config_file=str(Path(path).expanduser()), context=context)
        except config.ConfigException as exc:
            raise RuntimeFailure(f"cannot use kubeconfig {path}" + (f" context {context!r}" if context else "")
                                + f": {exc}",
                                fix="list the contexts with `kubectl config get-contexts` and set "
                                "`kubernetes: {context: NAME}` in the spec (or pass --context)") from None
        where = f"{api_client.configuration.host}" + (f" (context {context})" if context else "")
        return Cluster(api_client, where)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config()
        except config.ConfigException as exc:
            raise RuntimeFailure(f"in-cluster config failed: {exc}",
                                fix="mount the pod's service account token, or give a kubeconfig") from None
        api_client = kubernetes.client.ApiClient()
        return Cluster(api_client, f"{api_client.configuration.host} (in-cluster)")
    raise RuntimeFailure(
        f"no kubeconfig at {path} and not running inside a cluster",
        fix="point KUBECONFIG at your cluster's kubeconfig (kind/k3d write one), or run tfsctl "
        "in a pod with a service account",
    )


def selector(deployment: str, role: str | None = None) -> str:
    """Our objects only: managed by tfsctl and carrying the deployment's label."""
    out = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_DEPLOYMENT}={deployment}"
    return out + (f",io.tfso/role={role}" if role else "")
