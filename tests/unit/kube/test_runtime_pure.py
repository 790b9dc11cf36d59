"""The kubernetes runtime's pure parts: readiness judgement, log excerpts, the replica-ratio
split, the two-step label move, and the deployed spec kept in the state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.health import ModelHealth, VersionState
from orchestrator.runtime.kubernetes import (
    KubernetesRuntime,
    ReplicaRatio,
    _health,
    _judge,
    log_excerpt,
    spec_from_state,
    spec_to_state,
)
from orchestrator.spec import parse_spec


def _spec(tmp_path: Path, extra: str = ""):  # type: ignore[no-untyped-def]
    return parse_spec("model_uri: gs://bucket-1/m\n" + extra, file=tmp_path / "m.yaml", check_files=False)


@pytest.mark.parametrize("extra", [
    "",
    "version_policy: {latest: 2}\nrouter: {gateway: gw, namespace: infra}\n",
    "version_policy: all\ndevice: gpu\ngpu: {count: 2}\nautoscale: {max: 4}\nresources: {cpus: 1}\n",
    "version_policy: {specific: [1, 3]}\nversion_labels: {stable: 1}\nkubernetes: {namespace: ml, context: prod}\n",
])
def test_the_deployed_spec_round_trips_through_the_state_file(tmp_path: Path, extra: str) -> None:
    spec = _spec(tmp_path, extra)
    again = spec_from_state(json.loads(json.dumps(spec_to_state(spec))))
    assert again == spec.model_copy(update={"source": None})


def test_readiness_needs_every_wanted_version_and_flags_a_failed_load() -> None:
    ok = ModelHealth("m", True, (VersionState(1, "AVAILABLE"), VersionState(2, "LOADING")))
    assert _judge("m", ok, [1])[0] and not _judge("m", ok, [1, 2])[0]
    assert not _judge("m", ok, None)[0]  # unknown wanted set: nothing may still be loading
    bad = ModelHealth("m", True, (VersionState(1, "AVAILABLE"), VersionState(3, "END", "DATA_LOSS", "corrupt")))
    ready, failed, detail = _judge("m", bad, [1, 3])
    assert not ready and failed and "corrupt" in detail
    assert not _judge("m", bad, [1])[1]  # a failed version nobody asked for does not fail the wait


def test_proxied_bodies_are_parsed_like_tf_servings_status() -> None:
    body = json.dumps({"model_version_status": [{"version": "2", "state": "AVAILABLE",
                                                 "status": {"error_code": "OK", "error_message": ""}}]})
    assert _health("m", 200, body.encode()).available() == {2}
    assert _health("m", 404, b'{"error": "Servable not found"}').error == "Servable not found"
    api = _health("m", 503, json.dumps({"kind": "Status", "message": "no endpoint"}).encode())
    assert not api.reachable and api.error == "no endpoint"
    assert not _health("m", 502, b"<html>bad gateway</html>").reachable


def test_log_excerpt_keeps_the_error_line_a_usage_text_would_push_out() -> None:
    text = "starting\ntfs-model-server: Unknown flag --x\n" + "\n".join(f"  --flag{i}" for i in range(40))
    excerpt = log_excerpt(text, lines=5)
    assert excerpt.splitlines()[0] == "tfs-model-server: Unknown flag --x"
    assert excerpt.splitlines()[-1] == "  --flag39" and len(excerpt.splitlines()) == 7
    assert log_excerpt("a\nb") == "a\nb"


@pytest.mark.parametrize(("total", "weight", "split"), [
    (2, 0, (2, 0)), (2, 10, (1, 1)), (2, 50, (1, 1)), (2, 90, (1, 1)), (2, 100, (0, 2)),
    (4, 25, (3, 1)), (4, 60, (2, 2)), (4, 99, (1, 3)), (10, 10, (9, 1)),
])
def test_replica_ratio_split_keeps_a_pod_on_each_live_side(tmp_path: Path, total: int, weight: int,
                                                           split: tuple[int, int]) -> None:
    router = ReplicaRatio(None, None, _spec(tmp_path), "m", total=total)  # type: ignore[arg-type]
    assert router.split(weight) == split


def test_weights_must_be_a_stable_canary_split(tmp_path: Path) -> None:
    from orchestrator.errors import RuntimeFailure

    router = ReplicaRatio(None, None, _spec(tmp_path), "m", total=2)  # type: ignore[arg-type]
    with pytest.raises(RuntimeFailure, match="not a stable/canary split"):
        router.set_weights({"stable": 60, "canary": 60})


def test_a_moved_label_first_loads_its_version_beside_the_old_labels(tmp_path: Path) -> None:
    runtime = KubernetesRuntime(kubeconfig=str(tmp_path / "unused"))
    old = _spec(tmp_path, "version_policy: {specific: [1]}\nversion_labels: {stable: 1}\n")
    new = _spec(tmp_path, "version_policy: {specific: [2]}\nversion_labels: {stable: 2}\n")
    steps = runtime._label_steps(new, "FINAL", {"spec": spec_to_state(old)}, [2])
    (first, wait_first), (final, wait_final) = steps
    assert "versions: 1" in first and "versions: 2" in first and "value: 1" in first
    assert wait_first == [2] and (final, wait_final) == ("FINAL", [2])
    same = runtime._label_steps(old, "FINAL", {"spec": spec_to_state(old)}, [1])
    assert same == [("FINAL", [1])]
