"""What Prometheus scrapes for one deployment: prometheus.yml and a file_sd target list. Pure.

Targets come from the deployment's state (`.tfso/deployments/NAME.json`): every replica's REST
port at the spec's monitoring path (job `replicas`, role `stable`), the canary replicas of a
rollout in progress (`NAME.canary`, role `canary`), and the router's HAProxy Prometheus exporter
(job `router`), and the drift/accuracy exporter of a deployment that logs payloads (job
`quality`). Targets live in a file_sd file that Prometheus re-reads when it changes, so a
canary that comes or goes is picked up without restarting Prometheus (`refresh_targets`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.monitor.rules import QUALITY_JOB, REPLICAS_JOB, ROUTER_JOB

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
REPLICA_TARGETS = "replicas.json"
ROUTER_TARGETS = "router.json"
QUALITY_TARGETS = "quality.json"
RULES_FILE = "rules.yml"
ROUTER_METRICS_PATH = "/metrics"


@dataclass(frozen=True)
class Intervals:
    scrape_s: float = 5.0
    evaluation_s: float = 5.0

    @staticmethod
    def text(seconds: float) -> str:
        return f"{int(seconds)}s" if seconds == int(seconds) else f"{int(seconds * 1000)}ms"


def metrics_path(state: Mapping[str, Any]) -> str | None:
    """The replicas' Prometheus path from the rendered monitoring.config; None when it is off."""
    config = Path(state.get("config_dir", "")) / "monitoring.config"
    try:
        text = config.read_text(encoding="utf-8")
    except OSError:
        return None
    if not re.search(r"enable:\s*true", text):
        return None
    match = re.search(r'path:\s*"([^"]*)"', text)
    return match.group(1) if match and match.group(1) else DEFAULT_METRICS_PATH


def replica_targets(name: str, state: Mapping[str, Any],
                    canary: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """file_sd groups, one per replica, so each carries its role and index as labels."""
    groups = []
    for role, st in (("stable", state), ("canary", canary)):
        for r in (st or {}).get("replicas", []):
            groups.append({
                "targets": [f"127.0.0.1:{r['rest_port']}"],
                "labels": {"deployment": name, "role": role, "replica": str(r.get("index", 0))},
            })
    return groups


def router_targets(name: str, state: Mapping[str, Any]) -> list[dict[str, Any]]:
    router = state.get("router") or {}
    port = router.get("metrics_port")
    if not port:
        return []
    return [{"targets": [f"127.0.0.1:{port}"], "labels": {"deployment": name, "role": "router"}}]


def quality_targets(name: str, port: int | None) -> list[dict[str, Any]]:
    """The drift/accuracy exporter (monitor/exporter.py), when the deployment logs payloads."""
    if not port:
        return []
    return [{"targets": [f"127.0.0.1:{port}"], "labels": {"deployment": name, "role": "quality"}}]


def prometheus_yaml(folder: Path, path: str, intervals: Intervals) -> str:
    """prometheus.yml: three file_sd jobs and the rule file, all in `folder`."""
    def job(name: str, metrics: str, targets: str) -> dict[str, Any]:
        return {"job_name": name, "metrics_path": metrics,
                "file_sd_configs": [{"files": [str(folder / targets)], "refresh_interval": "5s"}]}

    config = {
        "global": {"scrape_interval": intervals.text(intervals.scrape_s),
                   "scrape_timeout": intervals.text(min(intervals.scrape_s, 10.0)),
                   "evaluation_interval": intervals.text(intervals.evaluation_s)},
        "rule_files": [str(folder / RULES_FILE)],
        "scrape_configs": [job(REPLICAS_JOB, path, REPLICA_TARGETS),
                           job(ROUTER_JOB, ROUTER_METRICS_PATH, ROUTER_TARGETS),
                           job(QUALITY_JOB, "/metrics", QUALITY_TARGETS)],
    }
    return yaml.safe_dump(config, sort_keys=False)


def targets_json(groups: list[dict[str, Any]]) -> str:
    return json.dumps(groups, indent=2) + "\n"


def kubernetes_yaml(name: str, namespace: str, rules_path: str, intervals: Intervals) -> str:
    """prometheus.yml for a Prometheus inside the cluster: pods of deployment `name` found by
    kubernetes_sd (role pod) through the `prometheus.io/*` annotations the manifests carry,
    relabelled to the same job and labels as the local and docker targets, so the same rules,
    alerts and dashboard apply."""
    from orchestrator.kube.manifests import LABEL_DEPLOYMENT, LABEL_ROLE

    def meta(label: str) -> str:
        return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)

    annotation = "__meta_kubernetes_pod_annotation_prometheus_io_"
    relabel = [
        {"source_labels": [meta(LABEL_DEPLOYMENT)], "regex": re.escape(name), "action": "keep"},
        {"source_labels": [annotation + "scrape"], "regex": "true", "action": "keep"},
        {"source_labels": [annotation + "path"], "regex": "(.+)", "target_label": "__metrics_path__"},
        {"source_labels": ["__address__", annotation + "port"],
         "regex": r"([^:]+)(?::\d+)?;(\d+)", "replacement": "$1:$2",
         "target_label": "__address__"},
        {"source_labels": [meta(LABEL_DEPLOYMENT)], "target_label": "deployment"},
        {"source_labels": [meta(LABEL_ROLE)], "target_label": "role"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "replica"},
    ]
    config = {
        "global": {"scrape_interval": intervals.text(intervals.scrape_s),
                   "evaluation_interval": intervals.text(intervals.evaluation_s)},
        "rule_files": [rules_path],
        "scrape_configs": [{
            "job_name": REPLICAS_JOB,
            "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [namespace]}}],
            "relabel_configs": relabel,
        }],
    }
    return yaml.safe_dump(config, sort_keys=False)
