"""The client's surface: sorted exports, no TensorFlow, no dependencies on the rest of us."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import orchestrator.client as client

CLIENT_DIR = Path(client.__file__).parent
FORBIDDEN = ("tensorflow", "tensorflow_serving", "pydantic", "docker", "keras")
# The client and the protocol package it shares with the server.
ALLOWED_OURS = (
    "orchestrator.client",
    "orchestrator.protocol",
    "orchestrator.errors",
    "orchestrator.files",
    "orchestrator.protos",
)
PROTOCOL_DIR = CLIENT_DIR.parent / "protocol"


def test_all_is_sorted_and_complete() -> None:
    assert client.__all__ == sorted(client.__all__)
    for name in client.__all__:
        assert getattr(client, name) is not None, name


def test_import_leaves_tensorflow_out() -> None:
    code = (
        "import json, sys\n"
        "import orchestrator.client as c\n"
        "c.GrpcClient, c.RestClient, c.AsyncGrpcClient\n"
        "import orchestrator.protos.apis_pb2\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{list(FORBIDDEN)!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def test_plain_import_is_lean() -> None:
    """requests, tenacity and ml_dtypes load when first needed, not on import."""
    code = (
        "import json, sys\nimport orchestrator.client\n"
        "print(json.dumps([m for m in ('requests', 'tenacity', 'ml_dtypes', 'grpc') "
        "if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_forbidden_imports_in_source() -> None:
    for path in sorted([*CLIENT_DIR.rglob("*.py"), *PROTOCOL_DIR.rglob("*.py")]):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {name}"
            if top == "orchestrator":
                assert name.startswith(ALLOWED_OURS), f"{path.name} imports {name}"
