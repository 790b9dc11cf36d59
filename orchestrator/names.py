"""What a model, label or deployment name may be: one rule, used by the spec, plan and SavedModel code."""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
