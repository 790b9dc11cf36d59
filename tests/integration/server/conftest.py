"""Fixtures for the server suite: test models exported once per session, one shared server.

The shared server serves, from a --model_config_file:
- half_plus_two (TF1 graph): versions 1 (y = 0.5x + 2) and 2 (y = 0.5x + 3), policy all,
  labels stable -> 1, canary -> 2;
- strings (TF1 graph with string inputs/outputs);
- mlp (Keras 3 export).
Monitoring is on at the default path and REST bodies are limited to 1 MB.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.server import (
    ServerProcess,
    export_half_plus_two_tf1,
    export_keras_mlp,
    export_strings_tf1,
)

pytestmark = pytest.mark.integration
MAX_BODY = 1_000_000


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    export_half_plus_two_tf1(root / "half_plus_two", versions=(1,), b=2.0)
    export_half_plus_two_tf1(root / "half_plus_two", versions=(2,), b=3.0)
    export_strings_tf1(root / "strings")
    export_keras_mlp(root / "mlp")
    return root


def models_config(root: Path, extra: str = "") -> str:
    return f"""
model_config_list {{
  config {{
    name: "half_plus_two"
    base_path: "{root / "half_plus_two"}"
    model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "strings" base_path: "{root / "strings"}" model_platform: "tensorflow" }}
  config {{ name: "mlp" base_path: "{root / "mlp"}" model_platform: "tensorflow" }}
  {extra}
}}
"""


@pytest.fixture(scope="session")
def server(model_root: Path, tmp_path_factory: pytest.TempPathFactory):
    cfg_dir = tmp_path_factory.mktemp("config")
    (cfg_dir / "models.config").write_text(models_config(model_root))
    (cfg_dir / "monitoring.config").write_text(
        'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n'
    )
    args = [
        f"--model_config_file={cfg_dir / 'models.config'}",
        f"--monitoring_config_file={cfg_dir / 'monitoring.config'}",
    ]
    with ServerProcess(args, env={"TFS_MAX_REQUEST_BYTES": str(MAX_BODY)}) as srv:
        srv.wait_until_available("half_plus_two", versions=(1, 2))
        srv.wait_until_available("strings")
        srv.wait_until_available("mlp")
        yield srv
