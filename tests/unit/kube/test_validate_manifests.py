"""Every rendered manifest against Kubernetes' schemas (1.30 to the newest kubernetes-validate
ships, strict: unknown fields fail) and every CRD object against its published OpenAPI schema
(tests/data/crd_schemas, sources in SOURCES.md)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kv

from tests.unit.kube.test_manifests import VARIANTS, rendered

SCHEMAS = Path(__file__).parents[2] / "data" / "crd_schemas"
CRDS = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io_httproute_v1.json",
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): "gateway.networking.k8s.io_grpcroute_v1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservice_v1beta1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor_v1.json",
}
KUSTOMIZE = ("kustomize.config.k8s.io/v1beta1", "Kustomization")


def _minors() -> list[str]:
    newest = tuple(int(p) for p in kv.latest_version().split(".")[:2])
    assert newest >= (1, 30)
    available = {v for v in kv.all_versions()}
    out = [f"1.{m}.0" for m in range(30, newest[1] + 1)]
    missing = [v for v in out if v not in available]
    assert not missing, f"kubernetes-validate lacks schemas for {missing}"
    return out


MINORS = _minors()


def _all_objects() -> list[tuple[str, str, dict[str, Any]]]:
    return [(variant, name, yaml.safe_load(text))
            for variant in sorted(VARIANTS) for name, text in rendered(variant).items()]


OBJECTS = _all_objects()


def _core(obj: dict[str, Any]) -> bool:
    return (obj["apiVersion"], obj["kind"]) not in CRDS and (obj["apiVersion"], obj["kind"]) != KUSTOMIZE


@pytest.mark.parametrize("version", MINORS)
def test_core_objects_pass_strict_validation(version: str) -> None:
    checked = 0
    for variant, name, obj in OBJECTS:
        if not _core(obj):
            continue
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{variant}/{name} invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 25  # every variant's ConfigMap, Deployment, Service, PDB, HPA...


def _validator(api: str, kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / CRDS[(api, kind)]).read_text())
    return jsonschema.Draft7Validator(schema)


def _errors(obj: dict[str, Any]) -> list[str]:
    validator = _validator(obj["apiVersion"], obj["kind"])
    return [f"{e.message} at {list(e.absolute_path)}" for e in validator.iter_errors(obj)]


def test_crd_objects_match_their_published_schemas() -> None:
    kinds = set()
    for variant, name, obj in OBJECTS:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            assert not _errors(obj), f"{variant}/{name}: {_errors(obj)}"
            kinds.add(obj["kind"])
    assert kinds == {"HTTPRoute", "GRPCRoute", "InferenceService", "ServiceMonitor"}


def test_the_checks_can_fail() -> None:
    """A misspelt field fails both checks, so a passing run means something."""
    deployment = next(o for _, n, o in OBJECTS if n == "gcs.deployment.yaml")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, MINORS[-1], strict=True)
    route = next(o for _, n, o in OBJECTS if n == "gateway.httproute.yaml")
    bad = copy.deepcopy(route)
    bad["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    assert _errors(bad)
    isvc = next(o for _, n, o in OBJECTS if n == "kserve.inferenceservice.yaml")
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    assert _errors(bad)
