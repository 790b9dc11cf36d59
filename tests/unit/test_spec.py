"""Spec validation: the smallest spec, defaults, and bad specs that must fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import SpecError
from orchestrator.spec import load_spec, parse_spec, spec_path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """serving_configs/ beside models/m with version folders 1, 2 and 3."""
    for v in (1, 2, 3):
        (tmp_path / "models" / "m" / str(v)).mkdir(parents=True)
    (tmp_path / "models" / "empty").mkdir(parents=True)
    (tmp_path / "serving_configs").mkdir()
    return tmp_path


def write(tree: Path, text: str, name: str = "m") -> Path:
    path = tree / "serving_configs" / f"{name}.yaml"
    path.write_text(text)
    return path


def parse(tree: Path, text: str, name: str = "m"):
    path = write(tree, text, name)
    return parse_spec(path.read_text(), file=path)


def test_smallest_spec_is_one_line(tree: Path) -> None:
    spec = parse(tree, "base_path: ../models/m\n")
    assert spec.name == "m"
    assert spec.base_path == (tree / "models" / "m").resolve()
    assert spec.version_policy.kind == "latest" and spec.version_policy.num_versions == 1
    assert spec.wanted_versions() == [3]
    assert spec.ports.host == "127.0.0.1"
    assert spec.runtime == "auto" and spec.device == "cpu" and spec.replicas == 1
    assert spec.image_ref == "tensorflow/serving:2.19.0"


def test_full_spec(tree: Path) -> None:
    spec = parse(
        tree,
        """
base_path: ../models/m
version_policy: {specific: [1, 3]}
version_labels: {stable: 1, canary: 3}
batching: {enabled: true, max_batch_size: 16, allowed_batch_sizes: [4, 8, 16]}
monitoring: {prometheus: true, path: /metrics}
ports: {grpc: 9000, rest: 9001}
runtime: docker
device: gpu
gpu: {count: 1, memory_fraction: 0.4}
replicas: 2
threads: {intra_op: 2, inter_op: 1}
health: {deadline_s: 30}
resources: {cpus: 1.5, memory: 2g}
""",
    )
    assert spec.version_policy.select([1, 2, 3]) == [1, 3]
    assert spec.version_labels == {"stable": 1, "canary": 3}
    assert spec.image_ref == "tensorflow/serving:2.19.0-gpu"
    assert spec.batching.allowed_batch_sizes == (4, 8, 16)


@pytest.mark.parametrize(
    ("text", "field", "line", "words"),
    [
        ("base_path: ../models/m\nreplica: 2\n", "replica", 2, "unknown field 'replica'"),
        ("base_path: ../models/m\nreplicas: two\n", "replicas", 2, "integer"),
        ("base_path: ../models/m\nreplicas: 0\n", "replicas", 2, "greater than or equal to 1"),
        ("base_path: ../models/m\nworkers: 0\n", "workers", 2, "greater than or equal to 1"),
        ("base_path: ../models/m\nworkers: 2000\n", "workers", 2, "less than or equal to 1024"),
        ("base_path: ../models/m\nworkers: many\n", "workers", 2, "integer"),
        ("name: ../etc\nbase_path: ../models/m\n", "name", 1, "not a valid model name"),
        ("base_path: ../models/m\nversion_labels: {'bad-label': 1}\n", "version_labels", 2, "not valid"),
        ("base_path: ../models/nope\n", "base_path", 1, "does not exist"),
        ("base_path: ../models/empty\n", "base_path", 1, "no numbered version folder"),
        ("base_path: ../models/m\nversion_labels: {canary: 2}\n", "version_labels.canary", 2, "not loaded by version_policy"),
        ("base_path: ../models/m\nversion_labels: {canary: 9}\n", "version_labels.canary", 2, "has no folder"),
        ("base_path: ../models/m\nversion_policy: {specific: [1, 7]}\n", "version_policy.specific", 2, "have no folder"),
        ("base_path: ../models/m\nversion_policy: newest\n", "version_policy", 2, "use latest, all"),
        ("base_path: ../models/m\nports: {grpc: 9000, rest: 9000}\n", "ports", 2, "must differ"),
        ("base_path: ../models/m\nports: {grpc: 70000}\n", "ports.grpc", 2, "less than or equal to 65535"),
        ("base_path: ../models/m\nruntime: k8s\n", "runtime", 2, "'auto', 'local', 'docker' or 'kubernetes'"),
        ("base_path: ../models/m\nbatching: {max_batch_size: 8, allowed_batch_sizes: [2, 4]}\n", "batching", 2, "must equal max_batch_size"),
        ("base_path: ../models/m\nmonitoring: {path: metrics}\n", "monitoring.path", 2, "starting with '/'"),
        ("base_path: ../models/m\ngpu: {memory_fraction: 1.5}\n", "gpu.memory_fraction", 2, "less than or equal to 1"),
        ("base_path: [unclosed\n", None, 2, "not valid YAML"),
        ("- base_path: x\n", None, 1, "a spec is a mapping"),
        ("replicas: 2\n", "base_path", 1, "base_path is required"),
        ("base_path: ../models/m\nresources: {memory: lots}\n", "resources.memory", 2, "512m or 2g"),
    ],
)
def test_bad_specs_name_file_field_line_and_fix(
    tree: Path, text: str, field: str | None, line: int, words: str
) -> None:
    with pytest.raises(SpecError) as info:
        parse(tree, text)
    err = info.value
    assert words in str(err)
    assert err.file and err.file.endswith("m.yaml")
    assert err.line == line
    if field is not None:
        assert err.field == field
        assert err.fix, "every field error says how to fix it"


def test_name_must_match_file(tree: Path) -> None:
    with pytest.raises(SpecError, match="differs from the file name"):
        parse(tree, "name: other\nbase_path: ../models/m\n")


def test_several_problems_reported_together(tree: Path) -> None:
    with pytest.raises(SpecError) as info:
        parse(tree, "base_path: ../models/m\nreplicas: 0\nruntime: x\n")
    assert "2 problems" in str(info.value)


def test_load_spec_by_name_and_unknown_name(tree: Path) -> None:
    write(tree, "base_path: ../models/m\n")
    spec = load_spec("m", configs_dir=tree / "serving_configs")
    assert spec.source == tree / "serving_configs" / "m.yaml"
    with pytest.raises(SpecError, match="no such spec file") as info:
        load_spec("nope", configs_dir=tree / "serving_configs")
    assert "known specs: m" in str(info.value)


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", "x y", ""])
def test_name_lookup_refuses_path_tricks(bad: str) -> None:
    with pytest.raises(SpecError, match="not a valid model name"):
        spec_path(bad)


def test_policy_short_forms(tree: Path) -> None:
    assert parse(tree, "base_path: ../models/m\nversion_policy: all\n").wanted_versions() == [1, 2, 3]
    assert parse(tree, "base_path: ../models/m\nversion_policy: {latest: 2}\n").wanted_versions() == [2, 3]


def test_demo_spec_in_repo_is_valid() -> None:
    spec = parse_spec(Path("serving_configs/demo.yaml").read_text(), file=Path("serving_configs/demo.yaml"), check_files=False)
    assert spec.name == "demo"


@pytest.mark.parametrize("text", ["=", "base_path: !!python/object:os.system x"])
def test_yaml_tags_without_a_safe_constructor_are_spec_errors(tmp_path: Path, text: str) -> None:
    """Found by the property tests: `=` (YAML's value tag) raised a bare ConstructorError."""
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="not valid YAML") as info:
        load_spec(str(path))
    assert info.value.fix
