"""Kubernetes manifests: golden files per spec variant, and the properties the issue names.

No cluster runs here: these tests pin what we would apply. `test_validate_manifests.py`
checks the same files against Kubernetes' and the CRDs' published schemas.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2 as msc_pb2

from orchestrator.cli.kube import manifest_files
from orchestrator.errors import SpecError
from orchestrator.kube import manifests
from orchestrator.spec import load_spec, parse_spec

HERE = Path(__file__).parent
SPECS = HERE / "specs"
GOLDEN = HERE / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
# variant → (target, canary version, canary weight)
VARIANTS: dict[str, tuple[str, int | None, int]] = {
    "gcs": ("kubernetes", None, 0),
    "gpu": ("kubernetes", None, 0),
    "hpa": ("kubernetes", None, 0),
    "pvc": ("kubernetes", None, 0),
    "image": ("kubernetes", None, 0),
    "gateway": ("kubernetes", 4, 10),
    "kserve": ("kserve", 2, 10),
}


def rendered(variant: str) -> dict[str, str]:
    target, version, weight = VARIANTS[variant]
    spec = load_spec(variant, configs_dir=SPECS, check_files=False)
    return manifest_files([spec], target, canary_version=version, canary_weight=weight)


def objects(variant: str) -> dict[str, dict[str, Any]]:
    return {name: yaml.safe_load(text) for name, text in rendered(variant).items()
            if name != "kustomization.yaml"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_golden(variant: str) -> None:
    files = rendered(variant)
    folder = GOLDEN / variant
    if UPDATE:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.yaml"):
            old.unlink()
        for name, text in files.items():
            (folder / name).write_text(text)
    assert folder.is_dir(), f"no golden folder {folder} (run with UPDATE_GOLDEN=1 once)"
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(files)
    for name, text in files.items():
        assert text == (folder / name).read_text(), f"{variant}/{name} differs (UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_carries_our_labels(variant: str) -> None:
    for obj in objects(variant).values():
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "tfsctl"
        assert labels["io.tfso/deployment"] == variant
        assert "app.kubernetes.io/name" in labels


def _deployment(variant: str, name: str | None = None) -> dict[str, Any]:
    return objects(variant)[f"{name or variant}.deployment.yaml"]


def test_config_map_holds_the_plan_files_and_parses_as_tf_serving_config() -> None:
    cm = objects("gcs")["gcs-config.configmap.yaml"]
    assert sorted(cm["data"]) == ["batching_parameters.txt", "models.config", "monitoring.config"]
    config = text_format.Parse(cm["data"]["models.config"], msc_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.base_path == "gs://my-models/gcs"
    assert list(model.model_version_policy.specific.versions) == [1, 2]
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}
    container = _deployment("gcs")["spec"]["template"]["spec"]["containers"][0]
    assert "--model_config_file=/config/models.config" in container["args"]
    assert "--batching_parameters_file=/config/batching_parameters.txt" in container["args"]
    assert "--model_config_file_poll_wait_seconds=10" in container["args"]  # ConfigMap hot reload
    assert {"name": "config", "mountPath": "/config", "readOnly": True} in container["volumeMounts"]


def test_pod_is_unprivileged_and_probes_mean_model_loaded() -> None:
    dep = _deployment("gcs")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/v1/models/gcs/metadata", "port": "http"}
    assert [p["name"] for p in container["ports"]] == ["grpc", "http"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    svc = objects("gcs")["gcs.service.yaml"]
    assert [(p["name"], p["appProtocol"]) for p in svc["spec"]["ports"]] == [("grpc", "grpc"), ("http", "http")]


def test_gpu_variant_has_gpu_image_limit_and_toleration() -> None:
    pod = _deployment("gpu")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "tensorflow/serving:2.19.0-gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "--per_process_gpu_memory_fraction=0.5" in container["args"]


def test_hpa_owns_replicas() -> None:
    objs = objects("hpa")
    hpa = objs["hpa.horizontalpodautoscaler.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert "replicas" not in objs["hpa.deployment.yaml"]["spec"]  # server-side apply leaves it to the HPA


def test_hpa_without_cpu_request_is_refused(tmp_path: Path) -> None:
    spec = parse_spec("model_uri: gs://b-1/m\nautoscale: {max: 3}\n", file=tmp_path / "m.yaml",
                      check_files=False)
    with pytest.raises(SpecError) as info:
        manifests.render(spec)
    assert info.value.field == "autoscale" and info.value.fix and "resources: {cpus: 1}" in info.value.fix


def test_pvc_is_mounted_read_only_at_the_model_path() -> None:
    pod = _deployment("pvc")["spec"]["template"]["spec"]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True}} in pod["volumes"]
    assert {"name": "model", "mountPath": "/models/pvc", "readOnly": True, "subPath": "team/pvc"} in \
        pod["containers"][0]["volumeMounts"]


def test_image_uri_copies_the_modelcar_into_an_empty_dir() -> None:
    pod = _deployment("image")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == "registry.example.com/models/image:3"
    assert init["command"] == ["cp", "-R", "/models/image/.", "/mnt/model/"]
    assert {"name": "model", "emptyDir": {}} in pod["volumes"]
    assert "annotations" not in _deployment("image")["spec"]["template"]["metadata"]  # prometheus: false


def test_gateway_routes_split_by_weight_between_stable_and_canary() -> None:
    objs = objects("gateway")
    http = objs["gateway.httproute.yaml"]["spec"]
    assert http["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                   "name": "public", "namespace": "gateways"}]
    assert [(b["name"], b["weight"]) for b in http["rules"][0]["backendRefs"]] == \
        [("gateway-stable", 90), ("gateway-canary", 10)]
    grpc = objs["gateway.grpcroute.yaml"]["spec"]
    assert [(b["name"], b["port"], b["weight"]) for b in grpc["rules"][0]["backendRefs"]] == \
        [("gateway-stable", 8500, 90), ("gateway-canary", 8500, 10)]
    canary_cm = objs["gateway-canary-config.configmap.yaml"]
    config = text_format.Parse(canary_cm["data"]["models.config"], msc_pb2.ModelServerConfig())
    assert list(config.model_config_list.config[0].model_version_policy.specific.versions) == [4]
    assert objs["gateway-canary.deployment.yaml"]["spec"]["selector"]["matchLabels"]["io.tfso/role"] == "canary"


def test_kserve_inference_service() -> None:
    (isvc,) = objects("kserve").values()
    spec = isvc["spec"]["predictor"]
    assert spec["tensorflow"]["storageUri"] == "oci://registry.example.com/models/kserve:1"
    assert spec["tensorflow"]["runtimeVersion"] == "2.19.0"
    assert spec["canaryTrafficPercent"] == 10
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 4)


def test_local_base_path_only_is_refused_with_advice(tmp_path: Path) -> None:
    spec = parse_spec(f"base_path: {tmp_path}\n", file=tmp_path / "m.yaml", check_files=False)
    with pytest.raises(SpecError) as info:
        manifests.render(spec)
    assert info.value.field == "model_uri"
    assert info.value.fix and "tfsctl package m --image REPO:TAG" in info.value.fix


@pytest.mark.parametrize("render", [manifests.render, manifests.inference_service])
def test_payload_logging_is_refused_not_rendered(render: Any) -> None:
    """The real image crash-loops on a logging_config; nothing of ours captures in a cluster."""
    spec = parse_spec("model_uri: gs://b-1/m\nlogging: {sample: 0.1, path: /logs}\n",
                      file=Path("/x/m.yaml"), check_files=False)
    with pytest.raises(SpecError) as info:
        render(spec)
    assert info.value.field == "logging"
    assert info.value.fix and "--runtime docker" in info.value.fix


def test_object_names_are_dns_names() -> None:
    spec = parse_spec("model_uri: gs://b-1/m\n", file=Path("/x/My_Model.yaml"), check_files=False)
    name = manifests.object_name(spec)
    assert name.startswith("my-model-") and len(name) == len("my-model-") + 6
    assert manifests.labels(spec)["io.tfso/deployment"] == "My_Model"


def _tfsctl(*args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli_render_kubernetes_writes_the_golden_files(tmp_path: Path) -> None:
    result = _tfsctl("render", "gateway", "--configs-dir", str(SPECS), "--target", "kubernetes",
                     "--out", str(tmp_path), "--canary-version", "4", "--canary-weight", "10")
    assert result.returncode == 0, result.stderr
    for golden in (GOLDEN / "gateway").glob("*.yaml"):
        assert (tmp_path / golden.name).read_text() == golden.read_text()


def test_cli_render_namespace_override_and_bad_uri(tmp_path: Path) -> None:
    result = _tfsctl("render", "pvc", "--configs-dir", str(SPECS), "--target", "kubernetes",
                     "--out", str(tmp_path / "o"), "--namespace", "team-a")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((tmp_path / "o" / "pvc.deployment.yaml").read_text())["metadata"]["namespace"] == "team-a"
    assert yaml.safe_load((tmp_path / "o" / "kustomization.yaml").read_text())["namespace"] == "team-a"
    (tmp_path / "bad.yaml").write_text("model_uri: s3://bucket/bad\n")
    result = _tfsctl("render", "bad", "--configs-dir", str(tmp_path), "--target", "kubernetes",
                     "--out", str(tmp_path / "o2"))
    assert result.returncode == 2
    assert "error:" in result.stderr and "unknown scheme 's3://'" in result.stderr
    assert "fix:" in result.stderr and "pvc://CLAIM/PATH" in result.stderr
    assert not (tmp_path / "o2").exists()  # nothing half-written
