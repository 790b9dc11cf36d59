"""A Grafana dashboard (import-ready JSON) over the recording rules. Pure.

Every panel reads recording rules only (never raw histograms), so the dashboard is cheap to
refresh and shows exactly what the alerts evaluate. Template variables: the Prometheus data
source, `model` and `version` (multi-select, "All" by default).
"""

from __future__ import annotations

from typing import Any

from orchestrator.monitor.rules import QUANTILES, RuleNames

SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _sel(rule: str) -> str:
    return f'{rule}{{model=~"$model",version=~"$version"}}'


def _panel(pid: int, title: str, unit: str, targets: list[tuple[str, str]],
           x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                     "legendFormat": legend} for i, (expr, legend) in enumerate(targets)],
    }


def dashboard(name: str, names: RuleNames) -> dict[str, Any]:
    by = "{{model}} v{{version}}"
    panels = [
        _panel(1, "Requests per second", "reqps",
               [(f"sum by (model, version) ({_sel(names.requests)})", by)], 0, 0),
        _panel(2, "Error ratio", "percentunit",
               [(f"max by (model, version) ({_sel(names.error_ratio)})", by)], 12, 0),
        _panel(3, "Latency percentiles", "s",
               [(f"max by (model, version) ({_sel(names.latency(q))})", f"{q} {by}")
                for q, _ in QUANTILES], 0, 8),
        _panel(4, "Errors per second", "reqps",
               [(f"sum by (model, version) ({_sel(names.errors)})", by)], 12, 8),
        _panel(5, "Batching queue depth (batches)", "short",
               [(f"max by (model, version) ({_sel(names.queue_depth)})", by)], 0, 16),
        _panel(6, "Router requests per second", "reqps",
               [(f"sum by (proxy) ({names.router_requests})", "{{proxy}}")], 12, 16),
        _panel(7, "Drift: PSI per feature (vs baseline)", "short",
               [(f"max by (model, version, feature) ({_sel(names.drift_psi)})",
                 "{{feature}} v{{version}}")], 0, 24),
        _panel(8, "Drift: Jensen-Shannon distance per feature", "short",
               [(f"max by (model, version, feature) ({_sel(names.drift_js)})",
                 "{{feature}} v{{version}}")], 12, 24),
        _panel(9, "Accuracy on late labels", "percentunit",
               [(f"min by (model, version) ({_sel(names.accuracy)})", by)], 0, 32),
    ]
    variables = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
         "current": {}, "hide": 0},
        {"name": "model", "type": "query", "label": "model", "datasource": DATASOURCE,
         "query": {"query": f"label_values({names.requests}, model)", "refId": "model"},
         "definition": f"label_values({names.requests}, model)",
         "multi": True, "includeAll": True, "allValue": ".*", "refresh": 2,
         "current": {"text": "All", "value": "$__all"}},
        {"name": "version", "type": "query", "label": "version", "datasource": DATASOURCE,
         "query": {"query": f'label_values({names.requests}{{model=~"$model"}}, version)',
                   "refId": "version"},
         "definition": f'label_values({names.requests}{{model=~"$model"}}, version)',
         "multi": True, "includeAll": True, "allValue": ".*", "refresh": 2,
         "current": {"text": "All", "value": "$__all"}},
    ]
    return {
        "title": f"TF Serving: {name}",
        "uid": f"tfso-{name}"[:40],
        "tags": ["tfserving-orchestrator", name],
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": panels,
    }
