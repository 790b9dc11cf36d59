"""Monitoring: a real Prometheus over a deployment, its rules, and what reads from it.

    rules.py    recording and alert rules (pure; checked with promtool)
    scrape.py   prometheus.yml and the file_sd target list from a deployment's state (pure)
    server.py   the Prometheus process behind `tfsctl monitor up|down|status`
    dashboard.py  the Grafana dashboard JSON
"""

from __future__ import annotations

from orchestrator.errors import RuntimeFailure


class MonitorError(RuntimeFailure):
    """Prometheus could not be set up, started, reached or stopped."""


__all__ = ["MonitorError"]
