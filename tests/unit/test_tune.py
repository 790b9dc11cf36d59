"""`tfsctl tune`'s choice: the fastest setting within the p99 budget, and the spec lines."""

from __future__ import annotations

import yaml

from orchestrator.spec import Batching, Spec
from orchestrator.tune import Result, Setting, best, candidates, tensorflow_candidates


def test_candidates_start_without_batching_and_size_batches_to_the_clients():
    settings = candidates(16, 2)
    assert settings[0] == Setting()
    assert {s.max_batch_size for s in settings[1:]} == {16}
    assert Setting(16, 1000, 2) in settings
    assert Setting(16, 0, 1) in settings  # the end-of-round batch
    assert all(s.num_batch_threads == 1 for s in candidates(16, 1)[1:])


def test_best_is_the_fastest_within_budget_and_without_errors():
    a = Result(Setting(), 900.0, 1.0, 5.0, 0)
    b = Result(Setting(8, 1000, 1), 2000.0, 2.0, 40.0, 0)
    c = Result(Setting(8, 5000, 1), 2500.0, 3.0, 90.0, 0)
    d = Result(Setting(8, 1000, 2), 3000.0, 2.0, 10.0, 3)  # errors: never chosen
    assert best([a, b, c, d], 50.0) is b
    assert best([a, b, c, d], 100.0) is c
    assert best([b, c], 1.0) is None


def test_spec_lines_are_a_valid_batching_block():
    doc = yaml.safe_load(Setting(8, 5000, 1).spec_lines())
    assert Batching(**doc["batching"]) == Batching(
        enabled=True, max_batch_size=8, batch_timeout_micros=5000, num_batch_threads=1
    )
    assert yaml.safe_load(Setting().spec_lines()) == {"batching": {"enabled": False}}


def test_the_second_stage_tries_tensorflows_settings_on_the_chosen_batching():
    base = Setting(16, 0, 1)
    two = tensorflow_candidates(base, 2)
    assert Setting(16, 0, 1, onednn=False) in two
    assert Setting(16, 0, 1, intra_op=1) in two and Setting(16, 0, 1, 1, False) in two
    assert tensorflow_candidates(base, 1) == [Setting(16, 0, 1, onednn=False)]  # one core: one thread
    assert Setting(16, 0, 1, 1, False).label == "16 rows, 0 µs, 1 thread, intra-op 1, oneDNN off"


def test_spec_lines_with_tensorflows_settings_make_a_valid_spec():
    doc = yaml.safe_load(Setting(16, 0, 1, intra_op=1, onednn=False).spec_lines())
    spec = Spec(name="m", base_path="/models/m", **doc)
    assert spec.threads.intra_op == 1 and spec.onednn is False and spec.batching.max_batch_size == 16
    assert yaml.safe_load(Setting(onednn=False).spec_lines()) == {"batching": {"enabled": False},
                                                                 "onednn": False}
