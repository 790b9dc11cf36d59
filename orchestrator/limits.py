"""Every size limit that protects the server and the CLI from hostile or careless input, in one place.

Each limit has an environment knob, read when asked for (servers read them at start-up), so an
operator can raise one without a code change. The README's "Limits" table lists the same names.

| limit                 | env knob                 | default  | where it holds                            |
| --------------------- | ------------------------ | -------- | ----------------------------------------- |
| request body          | TFS_MAX_REQUEST_BYTES    | 256 MiB  | REST, after decompression, as it is read  |
| tensor rank (nesting) | TFS_MAX_TENSOR_RANK      | 64       | REST JSON tensors, gRPC TensorProto       |
| bytes per tensor      | TFS_MAX_TENSOR_BYTES     | 1 GiB    | declared shape x dtype size, before alloc |
| inputs per request    | TFS_MAX_INPUTS           | 1024     | REST and gRPC predict                     |
| model / label name    | TFS_MAX_NAME_LENGTH      | 256      | specs, models.config, reload requests     |
| YAML alias expansion  | TFS_MAX_YAML_ALIAS_NODES | 10000    | spec loader                               |

Fixed, not configurable: spec files nested deeper than `SPEC_MAX_DEPTH` are refused. JSON
documents deeper than `JSON_PARSER_DEPTH` levels are refused by the parser itself (orjson's
fixed limit); tensors deeper than the tensor rank limit are refused before numpy sees them (numpy
cannot hold more than 64 dimensions, so the knob can only lower it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MiB = 1024 * 1024
JSON_PARSER_DEPTH = 1024
NUMPY_MAX_RANK = 64
SPEC_MAX_DEPTH = 64  # [ ] / { } nesting in a spec file; real specs use 3 or 4


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 256 * MiB
    max_tensor_rank: int = NUMPY_MAX_RANK
    max_tensor_bytes: int = 1024 * MiB
    max_inputs: int = 1024
    max_name_length: int = 256
    max_yaml_alias_nodes: int = 10_000


_ENV = {
    "max_request_bytes": "TFS_MAX_REQUEST_BYTES",
    "max_tensor_rank": "TFS_MAX_TENSOR_RANK",
    "max_tensor_bytes": "TFS_MAX_TENSOR_BYTES",
    "max_inputs": "TFS_MAX_INPUTS",
    "max_name_length": "TFS_MAX_NAME_LENGTH",
    "max_yaml_alias_nodes": "TFS_MAX_YAML_ALIAS_NODES",
}
DEFAULTS = Limits()


def env_name(field: str) -> str:
    return _ENV[field]


def current() -> Limits:
    """The limits with the environment's overrides; a bad or non-positive value keeps the default."""
    values = {}
    for field, env in _ENV.items():
        default = getattr(DEFAULTS, field)
        raw = os.environ.get(env, "").strip()
        try:
            value = int(raw) if raw else default
        except ValueError:
            value = default
        values[field] = value if value > 0 else default
    values["max_tensor_rank"] = min(values["max_tensor_rank"], NUMPY_MAX_RANK)
    return Limits(**values)
