"""The Kubernetes scrape pieces give the targets the labels the monitor's rules group by.

No cluster here (so no kubernetes_sd discovery): the test checks that the ServiceMonitor's
relabelings and `tfsctl monitor render --target kubernetes`'s prometheus.yml (checked by promtool)
produce job `replicas` and the deployment/role/replica labels that every rule, alert and dashboard
query uses, from the labels and annotations the pods really carry.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.kube.manifests import render, scrape_relabelings
from orchestrator.monitor.rules import (
    REPLICAS_JOB,
    RuleNames,
    Thresholds,
    alert_rules,
    recording_rules,
)
from orchestrator.spec import load_spec

pytestmark = pytest.mark.integration
SPEC = "model_uri: gs://bucket/kq\nreplicas: 2\nkubernetes: {namespace: models, service_monitor: true}\n"


def _target_labels_rules_need() -> set[str]:
    names = RuleNames("1m")
    exprs = [r["expr"] for r in recording_rules(names)] + [a["expr"] for a in alert_rules(
        names, Thresholds())]
    labels: set[str] = set()
    for expr in exprs:
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            labels |= {x.strip() for x in group.split(",")}
    # Labels the server's own metrics carry, or Prometheus adds, are not the scrape config's job.
    return labels - {"model", "version", "le", "instance", "proxy", "feature", "side"}


def _meta(label: str) -> str:
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)


def test_service_monitor_and_scrape_config_match_the_rules(tmp_path: Path) -> None:
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "serving_configs" / "kq.yaml").write_text(SPEC)
    spec = load_spec("kq", configs_dir=tmp_path / "serving_configs", check_files=False)
    objects = render(spec)
    pods = [o for o in objects if o["kind"] == "Deployment"]
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert pods and len(monitors) == 1
    need = _target_labels_rules_need()
    assert need == {"deployment", "role", "replica"}, need

    # The ServiceMonitor: job `replicas` (TfsoReplicaDown selects it) and the labels, from pod
    # labels every pod template has.
    relabel = monitors[0]["spec"]["endpoints"][0]["relabelings"]
    assert relabel == scrape_relabelings()
    made = {r["targetLabel"]: r for r in relabel}
    assert made["job"]["replacement"] == REPLICAS_JOB
    assert 'up{job="replicas"}' in " ".join(a["expr"] for a in alert_rules(RuleNames(), Thresholds()))
    assert need <= set(made)
    for pod in pods:
        template = pod["spec"]["template"]["metadata"]
        have = {_meta(k) for k in template["labels"]} | {"__meta_kubernetes_pod_name"}
        for rule in relabel:
            assert set(rule.get("sourceLabels", [])) <= have, (rule, have)

    # `tfsctl monitor render`: a prometheus.yml promtool accepts, with the same job and labels,
    # reading exactly the annotations the pods carry.
    out = tmp_path / "prom"
    run = subprocess.run([sys.executable, "-m", "orchestrator", "monitor", "render", "kq",
                          "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    config = yaml.safe_load((out / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == REPLICAS_JOB
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["models"]}}]
    targets = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
    assert need <= targets
    annotations = pods[0]["spec"]["template"]["metadata"]["annotations"]
    read = {s for r in job["relabel_configs"] for s in r["source_labels"]
            if s.startswith("__meta_kubernetes_pod_annotation_")}
    assert read == {"__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", k)
                    for k in annotations}
    keep = job["relabel_configs"][0]
    assert keep["action"] == "keep" and keep["regex"] == "kq"
    # Debian's promtool has no kubernetes_sd: check the rest (relabelling) with a static target.
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed: `make system` installs it"
    job["static_configs"] = [{"targets": ["127.0.0.1:1"]}]
    del job["kubernetes_sd_configs"]
    config["rule_files"] = [str(out / "rules.yml")]
    (out / "static.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run([promtool, "check", "config", str(out / "static.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
