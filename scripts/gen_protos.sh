#!/usr/bin/env bash
# Regenerate orchestrator/protos/*_pb2.py and .pyi from the .proto sources.
# The proto root is the repo root, so generated code imports `from orchestrator.protos import x_pb2`.
# Uses grpc_tools' bundled protoc and well-known types (pip install grpcio-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python
WKT="$("$PYTHON" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
"$PYTHON" -m grpc_tools.protoc -I. -I"$WKT" --python_out=. --pyi_out=. orchestrator/protos/*.proto
echo "generated: $(ls orchestrator/protos/*_pb2.py | tr '\n' ' ')"
