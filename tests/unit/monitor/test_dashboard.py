"""The Grafana dashboard reads only recording rules that the rule file defines."""

from __future__ import annotations

import json
import re

import pytest

from orchestrator.monitor.dashboard import dashboard
from orchestrator.monitor.rules import RuleNames, recording_rules

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
             "unless", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric (or recording rule) names a PromQL expression or Grafana query reads."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range windows
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"(label_values\([^,()]+),\s*\w+\)", r"\1)", expr)  # its label argument
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][\w:]*", expr):
        if expr[m.end():].lstrip().startswith("(") or m.group(0) in _KEYWORDS:
            continue  # a function or an operator
        names.add(m.group(0))
    return names


@pytest.mark.parametrize("window", ["1m", "4s"])
def test_every_panel_query_uses_existing_recording_rules(window: str) -> None:
    names = RuleNames(window)
    recorded = {r["record"] for r in recording_rules(names)}
    board = json.loads(json.dumps(dashboard("demo", names)))  # JSON-serialisable
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    assert len(board["panels"]) >= 6
    for expr in exprs:
        used = metric_names(expr)
        assert used, expr
        assert used <= recorded, (expr, used - recorded)


def test_metric_name_extraction_catches_raw_metrics() -> None:
    assert metric_names('sum by (version) (rate(tfso_requests_total{model=~"$m"}[1m]))') == {
        "tfso_requests_total"}
    assert metric_names("label_values(model_version:tfso_requests:rate1m, model)") == {
        "model_version:tfso_requests:rate1m"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))") == {
        "x_bucket"}


def test_panels_and_variables() -> None:
    board = dashboard("demo", RuleNames("1m"))
    titles = {p["title"] for p in board["panels"]}
    assert {"Requests per second", "Error ratio", "Latency percentiles",
            "Batching queue depth (batches)"} <= titles
    latency = next(p for p in board["panels"] if p["title"] == "Latency percentiles")
    assert [t["legendFormat"].split()[0] for t in latency["targets"]] == ["p50", "p95", "p99"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "model", "version"}
    assert variables["version"]["multi"] and variables["version"]["includeAll"]
    for panel in board["panels"]:
        for target in panel["targets"]:
            if "tfso" in target["expr"]:
                assert '$model' in target["expr"] and '$version' in target["expr"]
