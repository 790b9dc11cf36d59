"""Our batching and monitoring files against TF Serving's own examples of them, field by field.

The examples are written here from TF Serving's documentation (g3doc/serving_config.md, "Example
batching parameters file" and the Prometheus monitoring example), which has the same fields and
values as its test data (tensorflow_serving/servables/tensorflow/testdata/batching_config.txt and
monitoring_config.txt; the latter in the `name: { a: 1, b: 2 }` spelling written below; those
files are not in ../shared, and upstream files are never committed here). The files are compared
with a small text-format reader of this test's own, so neither our protos nor our server decide
what matches.
"""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.plan import BATCHING_CONFIG, MONITORING_CONFIG, build_plan
from orchestrator.server.config import read_batching_parameters, read_monitoring_config
from orchestrator.spec import parse_spec

UPSTREAM_BATCHING = """\
max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
"""
UPSTREAM_MONITORING = """\
prometheus_config: {
  enable: true,
  path: "/monitoring/prometheus/metrics"
}
"""


def fields(text: str) -> dict[str, str]:
    """Text-format protobuf as {dotted.field.path: value} (repeated fields as `name[i]`).

    An empty wrapper message (`batch_timeout_micros {}`, how protobuf prints Int64Value 0) reads
    as its `value` field at the proto3 default, 0: the same message TF Serving's parser builds."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_.]*|-?[0-9][0-9.eE+-]*|[{}:,;]', text)
    out: dict[str, str] = {}
    counts: dict[str, int] = {}
    stack: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in (",", ";"):
            i += 1
            continue
        if tok == "}":
            opened = stack.pop()
            if tokens[i - 1] == "{":  # an empty message
                out[".".join([*stack, opened, "value"])] = "0"
            i += 1
            continue
        name = tok
        i += 1
        if tokens[i] == ":":
            i += 1
        if tokens[i] == "{":
            stack.append(name)
            i += 1
            continue
        key = ".".join([*stack, name])
        n = counts.get(key, 0)
        counts[key] = n + 1
        out[key if n == 0 else f"{key}[{n}]"] = tokens[i]
        i += 1
    return out


def test_the_reader_reads_both_spellings() -> None:
    assert fields(UPSTREAM_MONITORING) == fields(
        'prometheus_config {\n  enable: true\n  path: "/monitoring/prometheus/metrics"\n}\n')
    assert fields("a { value: 1 }\nb: 2\nb: 3\n") == {"a.value": "1", "b": "2", "b[1]": "3"}
    assert fields("a {\n}\n") == fields("a { value: 0 }")


def plan_files(tmp_path: Path, spec_text: str) -> dict[str, str]:
    (tmp_path / "models" / "m" / "1").mkdir(parents=True)
    (tmp_path / "serving_configs").mkdir()
    path = tmp_path / "serving_configs" / "m.yaml"
    path.write_text(spec_text)
    return dict(build_plan([parse_spec(path.read_text(), file=path)], config_dir="/config").files)


def test_batching_file_has_upstream_fields_and_values(tmp_path: Path) -> None:
    files = plan_files(tmp_path, "base_path: ../models/m\nbatching: {enabled: true, max_batch_size: 128, "
                                 "batch_timeout_micros: 0, max_enqueued_batches: 1000000, "
                                 "num_batch_threads: 8}\n")
    assert fields(files[BATCHING_CONFIG]) == fields(UPSTREAM_BATCHING) == {
        "max_batch_size.value": "128", "batch_timeout_micros.value": "0",
        "max_enqueued_batches.value": "1000000", "num_batch_threads.value": "8"}


def test_monitoring_file_has_upstream_fields_and_values(tmp_path: Path) -> None:
    files = plan_files(tmp_path, "base_path: ../models/m\n")
    assert fields(files[MONITORING_CONFIG]) == fields(UPSTREAM_MONITORING) == {
        "prometheus_config.enable": "true",
        "prometheus_config.path": '"/monitoring/prometheus/metrics"'}


def test_our_server_reads_upstream_examples(tmp_path: Path) -> None:
    batching, monitoring = tmp_path / "batching.txt", tmp_path / "monitoring.txt"
    batching.write_text(UPSTREAM_BATCHING)
    monitoring.write_text(UPSTREAM_MONITORING)
    opts = read_batching_parameters(str(batching), cpus=2)
    assert (opts.max_batch_size, opts.batch_timeout_micros, opts.max_enqueued_batches,
            opts.num_batch_threads) == (128, 0, 1000000, 8)
    mon = read_monitoring_config(str(monitoring))
    assert (mon.enable, mon.path) == (True, "/monitoring/prometheus/metrics")
