"""Property-based: any spec text gives the loader a Spec or a SpecError, within bounds."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import SpecError
from orchestrator.spec import Spec, parse_spec
from tests.helpers.bounded import bounded

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = sorted(f for f in Spec.model_fields if f != "source")
FILE = Path("/nonexistent/serving_configs/demo.yaml")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=25,
)
specs = st.dictionaries(st.sampled_from([*FIELDS, "other"]), values, max_size=6).map(
    lambda d: {"base_path": "../models/demo", **d}
)


def load(text: str) -> object:
    result = bounded(lambda: parse_spec(text, file=FILE, check_files=False), allowed=(SpecError,))
    assert isinstance(result, (Spec, SpecError))
    if isinstance(result, SpecError):
        assert result.message and result.fix, result  # every error says what and how to fix
    return result


@SETTINGS
@given(doc=specs)
def test_structured_specs(doc):
    load(yaml.safe_dump(doc))


@SETTINGS
@given(text=st.text(max_size=300))
def test_any_text(text):
    load(text)


@FEW
@given(levels=st.integers(1, 12), width=st.integers(1, 12))
def test_nested_aliases(levels, width):
    lines = ["base_path: ../models/demo", "a0: &a0 [x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    load("\n".join(lines) + "\n")


@FEW
@given(depth=st.integers(1, 6000), opener=st.sampled_from(["[", "{a: "]))
def test_any_nesting(depth, opener):
    closer = "]" if opener == "[" else "}"
    load("base_path: x\nextra: " + opener * depth + "1" + closer * depth + "\n")
