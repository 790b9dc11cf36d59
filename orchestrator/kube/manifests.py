"""Pure rendering of a Spec into Kubernetes objects (plain dicts), for apply or GitOps.

No client, no I/O: the same objects feed `tfsctl render` and (next) the kubernetes runtime's
server-side apply, and golden tests pin every variant. The server's files and flags come from
the same Plan as every other runtime; only where the model lives differs (`model_uri`).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from orchestrator.errors import SpecError
from orchestrator.plan import Plan, build_plan, model_config, server_env
from orchestrator.spec import GatewayRouter, Spec

Obj = dict[str, Any]

MANAGED_BY = "tfsctl"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_DEPLOYMENT = "io.tfso/deployment"
LABEL_ROLE = "io.tfso/role"
GRPC_PORT = 8500
REST_PORT = 8501
CONFIG_DIR = "/config"
MODELS_DIR = "/models"
# TF Serving re-reads models.config this often, so a ConfigMap edit hot-reloads the pods.
CONFIG_POLL_SECONDS = 10
RUN_AS = 1000  # the TF Serving binary needs no root; ports 8500/8501 are unprivileged
_DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def object_name(spec: Spec) -> str:
    """A DNS-1123 name for the model's objects; a hash keeps `My_Model` and `my-model` apart."""
    name = spec.name
    if _DNS.fullmatch(name) and len(name) <= 40:
        return name
    base = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:32].strip("-") or "model"
    return f"{base}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def labels(spec: Spec, role: str | None = None) -> dict[str, str]:
    out = {LABEL_NAME: "tensorflow-serving", LABEL_MANAGED_BY: MANAGED_BY, LABEL_DEPLOYMENT: spec.name}
    if role:
        out[LABEL_ROLE] = role
    return out


def _meta(spec: Spec, name: str, role: str | None = None) -> Obj:
    return {"name": name, "namespace": spec.kubernetes.namespace, "labels": labels(spec, role)}


def _require_uri(spec: Spec) -> None:
    if spec.model_uri is None:
        raise SpecError(
            "a cluster cannot read the local base_path; the spec needs a model_uri",
            file=str(spec.source) if spec.source else None,
            field="model_uri",
            fix=f"add `model_uri: gs://BUCKET/PATH`, `pvc://CLAIM/PATH`, or build an image with "
            f"`tfsctl package {spec.name} --image REPO:TAG` and add `model_uri: image://REPO:TAG`",
        )


def _refuse_logging(spec: Spec, what: str) -> None:
    """The real image fails on any logging_config ("No request-logger-creator provided"), and a
    cluster has no capture agent of ours yet: refused, never rendered and left to crash."""
    if spec.logging is not None:
        raise SpecError(
            f"payload logging (`logging:`) is not supported on {what} yet: TF Serving's image "
            "cannot log, and only the docker runtime's router captures the sample",
            file=str(spec.source) if spec.source else None,
            field="logging",
            fix="remove `logging:` for the cluster, or deploy with `--runtime docker` "
            "(router capture) or `--runtime local`",
        )


def cluster_model_path(spec: Spec) -> str:
    """Where TF Serving in the pod finds the version folders."""
    _require_uri(spec)
    assert spec.model_uri is not None
    if spec.model_uri.scheme == "gs":
        return spec.model_uri.uri  # TF Serving reads gs:// natively
    return f"{MODELS_DIR}/{spec.name}"


def cluster_plan(spec: Spec, *, versions: list[int] | None = None) -> Plan:
    """The Plan with in-pod paths and ports; `versions` pins a canary to its one version."""
    configs = None
    if versions is not None:
        configs = [model_config(spec, cluster_model_path, versions=versions, labels={})]
    plan = build_plan([spec], config_dir=CONFIG_DIR, model_path=cluster_model_path,
                      grpc_port=GRPC_PORT, rest_port=REST_PORT, model_configs=configs)
    args = (*plan.args, f"--model_config_file_poll_wait_seconds={CONFIG_POLL_SECONDS}")
    return Plan(files=plan.files, args=args, grpc_port=plan.grpc_port, rest_port=plan.rest_port,
                models=plan.models, env=plan.env)


def _memory(value: str) -> str:
    """Docker-style `512m`/`2g` (binary units) as a Kubernetes quantity."""
    number, unit = value[:-1], value[-1].lower()
    if unit.isdigit():
        return value
    return number + {"b": "", "k": "Ki", "m": "Mi", "g": "Gi"}[unit]


def _resources(spec: Spec) -> Obj:
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if spec.resources.cpus is not None:
        cpu = f"{round(spec.resources.cpus * 1000)}m"
        requests["cpu"] = limits["cpu"] = cpu
    if spec.resources.memory is not None:
        requests["memory"] = limits["memory"] = _memory(spec.resources.memory)
    if spec.device == "gpu":
        # `count: all` has no meaning on a shared node: one GPU per pod (README: compatibility)
        count = 1 if spec.gpu.count == "all" else spec.gpu.count
        limits["nvidia.com/gpu"] = str(count)  # a quantity: the API (and its client) want a string
    out: Obj = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _probe(spec: Spec, period: int, failures: int) -> Obj:
    """Metadata answers 200 only once a version is AVAILABLE: the probe means "model loaded"."""
    return {
        "httpGet": {"path": f"/v1/models/{spec.name}/metadata", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _volumes(spec: Spec, config_map: str) -> tuple[list[Obj], list[Obj], list[Obj]]:
    """Volumes, the server's mounts, and init containers (a modelcar copy for image://)."""
    assert spec.model_uri is not None
    volumes: list[Obj] = [
        {"name": "config", "configMap": {"name": config_map}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[Obj] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    inits: list[Obj] = []
    target = f"{MODELS_DIR}/{spec.name}"
    uri = spec.model_uri
    if uri.scheme == "pvc":
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": uri.location, "readOnly": True}})
        mount: Obj = {"name": "model", "mountPath": target, "readOnly": True}
        if uri.path:
            mount["subPath"] = uri.path
        mounts.append(mount)
    elif uri.scheme == "image":
        volumes.append({"name": "model", "emptyDir": {}})
        mounts.append({"name": "model", "mountPath": target, "readOnly": True})
        inits.append({
            "name": "modelcar",
            "image": uri.location,
            # the image `tfsctl package` builds holds /models/NAME and a static `cp`
            "command": ["cp", "-R", f"{target}/.", "/mnt/model/"],
            "volumeMounts": [{"name": "model", "mountPath": "/mnt/model"}],
            "securityContext": _security(),
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                          "limits": {"memory": "256Mi"}},
        })
    return volumes, mounts, inits


def _security() -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def config_map(spec: Spec, plan: Plan, name: str, role: str | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(spec, name, role),
            "data": dict(sorted(plan.files.items()))}


def deployment(spec: Spec, plan: Plan, *, name: str, config_name: str, role: str,
               replicas: int | None) -> Obj:
    selector = {LABEL_DEPLOYMENT: spec.name, LABEL_ROLE: role}
    volumes, mounts, inits = _volumes(spec, config_name)
    container: Obj = {
        "name": "tensorflow-serving",
        "image": spec.image_ref,
        "imagePullPolicy": {"missing": "IfNotPresent", "always": "Always", "never": "Never"}[spec.pull],
        "args": list(plan.args),
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
        ],
        "startupProbe": _probe(spec, 5, max(1, math.ceil(spec.health.deadline_s / 5))),
        "readinessProbe": _probe(spec, 5, 2),
        "livenessProbe": _probe(spec, 10, 3),
        "resources": _resources(spec),
        "securityContext": _security(),
        "volumeMounts": mounts,
    }
    if plan.env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(plan.env.items())]
    pod_spec: Obj = {
        "securityContext": {"runAsNonRoot": True, "fsGroup": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": volumes,
        "topologySpreadConstraints": [{
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        }],
    }
    if inits:
        pod_spec["initContainers"] = inits
    if spec.device == "gpu":
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    template_meta: Obj = {"labels": labels(spec, role)}
    if spec.monitoring.prometheus:
        template_meta["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(REST_PORT),
            "prometheus.io/path": spec.monitoring.path,
        }
    body: Obj = {
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    if replicas is not None:
        body = {"replicas": replicas, **body}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(spec, name, role), "spec": body}


def service(spec: Spec, name: str, role: str | None = None) -> Obj:
    selector = {LABEL_DEPLOYMENT: spec.name}
    if role:
        selector[LABEL_ROLE] = role
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, name, role),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
                {"name": "http", "port": REST_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
            ],
        },
    }


def pod_disruption_budget(spec: Spec, name: str) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(spec, name),
        "spec": {"maxUnavailable": 1,
                 "selector": {"matchLabels": {LABEL_DEPLOYMENT: spec.name, LABEL_ROLE: "stable"}}},
    }


def horizontal_pod_autoscaler(spec: Spec, name: str) -> Obj:
    assert spec.autoscale is not None
    if spec.resources.cpus is None:
        raise SpecError(
            "autoscale on CPU needs a CPU request to measure utilisation against",
            file=str(spec.source) if spec.source else None,
            field="autoscale",
            fix="add `resources: {cpus: 1}` (the per-pod CPU request), or drop autoscale",
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(spec, name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": spec.autoscale.min,
            "maxReplicas": spec.autoscale.max,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": spec.autoscale.target_cpu}}}],
        },
    }


def scrape_relabelings() -> list[Obj]:
    """The target labels `tfsctl monitor`'s rules group by: job `replicas`, deployment, role
    (stable/canary) and replica (the pod), from the pods' labels (ServiceMonitor spelling)."""
    def pod_label(label: str) -> str:
        return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)

    return [
        {"action": "replace", "targetLabel": "job", "replacement": "replicas"},
        {"action": "replace", "sourceLabels": [pod_label(LABEL_DEPLOYMENT)],
         "targetLabel": "deployment"},
        {"action": "replace", "sourceLabels": [pod_label(LABEL_ROLE)], "targetLabel": "role"},
        {"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_name"],
         "targetLabel": "replica"},
    ]


def service_monitor(spec: Spec, name: str) -> Obj:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(spec, name),
        "spec": {
            "selector": {"matchLabels": {LABEL_DEPLOYMENT: spec.name, LABEL_MANAGED_BY: MANAGED_BY}},
            "namespaceSelector": {"matchNames": [spec.kubernetes.namespace]},
            "endpoints": [{"port": "http", "path": spec.monitoring.path, "interval": "30s",
                           "relabelings": scrape_relabelings()}],
        },
    }


def routes(spec: Spec, name: str, canary_weight: int) -> list[Obj]:
    """Gateway API HTTPRoute and GRPCRoute splitting traffic stable/canary by weight (0-100)."""
    router = spec.router
    assert isinstance(router, GatewayRouter)
    if not 0 <= canary_weight <= 100:
        raise SpecError(f"canary weight {canary_weight} is not a percentage", fix="use 0 to 100")
    parent: Obj = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": router.gateway}
    if router.namespace:
        parent["namespace"] = router.namespace

    def backends(port: int) -> list[Obj]:
        refs = [{"name": f"{name}-stable", "port": port, "weight": 100 - canary_weight}]
        if canary_weight:
            refs.append({"name": f"{name}-canary", "port": port, "weight": canary_weight})
        return refs

    http: Obj = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _meta(spec, name),
        "spec": {
            "parentRefs": [parent],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": f"/v1/models/{spec.name}"}}],
                "backendRefs": backends(REST_PORT),
            }],
        },
    }
    grpc: Obj = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": _meta(spec, name),
        "spec": {
            "parentRefs": [parent],
            "rules": [{
                "matches": [{"method": {"type": "Exact", "service": svc}} for svc in
                            ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")],
                "backendRefs": backends(GRPC_PORT),
            }],
        },
    }
    return [http, grpc]


def render(spec: Spec, *, canary_version: int | None = None, canary_weight: int = 0,
           canary_replicas: int = 1) -> list[Obj]:
    """Every object of one deployment, in apply order; a canary adds its Deployment (and routes)."""
    _require_uri(spec)
    _refuse_logging(spec, "Kubernetes")
    name = object_name(spec)
    plan = cluster_plan(spec)
    objects: list[Obj] = [config_map(spec, plan, f"{name}-config")]
    objects.append(deployment(spec, plan, name=name, config_name=f"{name}-config", role="stable",
                              replicas=None if spec.autoscale else spec.replicas))
    objects.append(service(spec, name))
    gateway = isinstance(spec.router, GatewayRouter)
    if gateway:
        objects.append(service(spec, f"{name}-stable", "stable"))
    objects.append(pod_disruption_budget(spec, name))
    if spec.autoscale is not None:
        objects.append(horizontal_pod_autoscaler(spec, name))
    if spec.monitoring.prometheus and spec.kubernetes.service_monitor:
        objects.append(service_monitor(spec, name))
    if canary_version is not None:
        canary_plan = cluster_plan(spec, versions=[canary_version])
        objects.append(config_map(spec, canary_plan, f"{name}-canary-config", "canary"))
        objects.append(deployment(spec, canary_plan, name=f"{name}-canary",
                                  config_name=f"{name}-canary-config", role="canary",
                                  replicas=canary_replicas))
        if gateway:
            objects.append(service(spec, f"{name}-canary", "canary"))
    if gateway:
        objects.extend(routes(spec, name, canary_weight if canary_version is not None else 0))
    return objects


def inference_service(spec: Spec, *, canary_traffic_percent: int | None = None) -> Obj:
    """A KServe InferenceService with the tensorflow predictor, for clusters already on KServe."""
    _require_uri(spec)
    _refuse_logging(spec, "KServe")
    assert spec.model_uri is not None
    uri = spec.model_uri
    storage = f"oci://{uri.location}" if uri.scheme == "image" else uri.uri  # KServe's modelcar scheme
    tag = spec.tag.removesuffix("-gpu")
    predictor: Obj = {"storageUri": storage, "runtimeVersion": tag + ("-gpu" if spec.device == "gpu" else "")}
    resources = _resources(spec)
    if resources:
        predictor["resources"] = resources
    env = server_env(spec)
    if env:  # the predictor is a container: its env reaches TF Serving
        predictor["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    body: Obj = {"tensorflow": predictor}
    if spec.autoscale is not None:
        body = {"minReplicas": spec.autoscale.min, "maxReplicas": spec.autoscale.max,
                "scaleMetric": "cpu", "scaleTarget": spec.autoscale.target_cpu, **body}
    else:
        body = {"minReplicas": spec.replicas, "maxReplicas": spec.replicas, **body}
    if canary_traffic_percent is not None:
        body = {"canaryTrafficPercent": canary_traffic_percent, **body}
    meta = _meta(spec, object_name(spec))
    if spec.monitoring.prometheus:
        meta["annotations"] = {"serving.kserve.io/enable-prometheus-scraping": "true"}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": meta,
            "spec": {"predictor": body}}
