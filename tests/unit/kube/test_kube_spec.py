"""Spec fields for Kubernetes: model_uri, autoscale, router.gateway, kubernetes options."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import RuntimeFailure, SpecError
from orchestrator.spec import GatewayRouter, parse_spec


def _spec(tmp_path: Path, extra: str):
    return parse_spec(f"base_path: {tmp_path}\n{extra}\n", file=tmp_path / "demo.yaml", check_files=False)


@pytest.mark.parametrize(
    ("uri", "scheme", "location", "path"),
    [
        ("gs://my-bucket/models/demo", "gs", "my-bucket/models/demo", ""),
        ("pvc://models-claim/demo", "pvc", "models-claim", "demo"),
        ("pvc://models-claim", "pvc", "models-claim", ""),
        ("image://registry.example.com:5000/team/demo:3", "image", "registry.example.com:5000/team/demo:3", ""),
    ],
)
def test_model_uri_schemes(tmp_path: Path, uri: str, scheme: str, location: str, path: str) -> None:
    spec = _spec(tmp_path, f"model_uri: {uri}")
    assert spec.model_uri is not None
    assert (spec.model_uri.scheme, spec.model_uri.location, spec.model_uri.path) == (scheme, location, path)
    assert spec.model_uri.uri == uri


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("s3://bucket/demo", "unknown scheme 's3://'"),
        ("models/demo", "has no scheme"),
        ("pvc://Bad_Claim/demo", "not a valid PersistentVolumeClaim name"),
        ("image://demo", "not an image reference with a tag"),
        ("gs://", "missing its location"),
        ("pvc://claim/../etc", "missing its location"),
    ],
)
def test_bad_model_uri_names_field_line_and_fix(tmp_path: Path, uri: str, says: str) -> None:
    with pytest.raises(SpecError) as info:
        _spec(tmp_path, f"model_uri: '{uri}'")
    err = info.value
    assert says in err.message
    assert err.field == "model_uri" and err.line == 2
    assert err.fix and "gs://BUCKET/PATH" in err.fix


def test_autoscale_and_its_errors(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "autoscale: {min: 2, max: 5, target_cpu: 60}")
    assert spec.autoscale is not None and (spec.autoscale.min, spec.autoscale.max) == (2, 5)
    for bad, says in [("{min: 3, max: 2}", "min (3) is above max (2)"),
                      ("{max: 4, target_cpu: 0}", "target_cpu"),
                      ("{min: 1}", "autoscale.max")]:
        with pytest.raises(SpecError) as info:
            _spec(tmp_path, f"autoscale: {bad}")
        assert says in str(info.value)
        assert info.value.fix and "target_cpu" in info.value.fix


def test_router_is_haproxy_bool_or_a_gateway(tmp_path: Path) -> None:
    assert _spec(tmp_path, "router: true").router is True
    gw = _spec(tmp_path, "router: {gateway: public-gw, namespace: infra}").router
    assert gw == GatewayRouter(gateway="public-gw", namespace="infra")
    with pytest.raises(SpecError) as info:
        _spec(tmp_path, "router: {gateway: Not_DNS}")
    assert info.value.field is not None and info.value.field.startswith("router")
    assert info.value.fix and "gateway" in info.value.fix


def test_kubernetes_options(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "kubernetes: {namespace: models, context: kind-dev}")
    assert (spec.kubernetes.namespace, spec.kubernetes.context) == ("models", "kind-dev")
    assert _spec(tmp_path, "").kubernetes.namespace == "default"
    with pytest.raises(SpecError) as info:
        _spec(tmp_path, "kubernetes: {namespace: Models}")
    assert info.value.field == "kubernetes.namespace"


def test_local_and_docker_refuse_kubernetes_only_fields(tmp_path: Path) -> None:
    """Never accepted and ignored: the host runtimes say they cannot honour a Gateway or an HPA."""
    from orchestrator.runtime.select import choose_runtime

    for extra in ("router: {gateway: gw}", "autoscale: {max: 3}"):
        spec = _spec(tmp_path, extra)
        with pytest.raises(RuntimeFailure) as info:
            choose_runtime(spec, "local")
        assert "Kubernetes setting" in info.value.message
        assert info.value.fix and "tfsctl render demo --target kubernetes" in info.value.fix


def test_compose_refuses_kubernetes_only_fields(tmp_path: Path) -> None:
    from orchestrator.compose import compose_document

    spec = _spec(tmp_path, "router: {gateway: gw}")
    with pytest.raises(RuntimeFailure) as info:
        compose_document([spec], tmp_path / "out")
    assert "router.gateway is a Kubernetes setting" in info.value.message


def test_deploy_cli_refuses_a_gateway_spec_with_error_and_fix(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "models" / "gw" / "1").mkdir(parents=True)
    (tmp_path / "models" / "gw" / "1" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "gw.yaml").write_text("base_path: models/gw\nrouter: {gateway: public}\n")
    result = subprocess.run([sys.executable, "-m", "orchestrator", "deploy", "gw", "--configs-dir", str(tmp_path),
                             "--runtime", "local"], capture_output=True, text=True, timeout=120, check=False,
                            env={**__import__("os").environ, "TFSO_STATE_DIR": str(tmp_path / "state")})
    assert result.returncode == RuntimeFailure.exit_code, result.stderr
    assert "error:" in result.stderr and "router.gateway is a Kubernetes setting" in result.stderr
    assert "tfsctl render gw --target kubernetes" in result.stderr
    assert not (tmp_path / "state" / "deployments" / "gw.json").exists()
