#!/usr/bin/env bash
# Run TensorFlow Serving's own model-server integration test against tfs-model-server.
#
#   scripts/upstream_suite.sh [--mnist] /path/to/tensorflow/serving [TEST_NAME ...]
#
# Takes a checkout of github.com/tensorflow/serving (any recent release; its test data must be
# there, including the Git LFS files you want to test with). Copies, unchanged,
#   tensorflow_serving/model_servers/tensorflow_model_server_test.py
#   tensorflow_serving/model_servers/test_util/tensorflow_model_server_test_base.py
# into a scratch folder outside this repository and runs them the way Bazel would, with one swap:
# TEST_SRCDIR/tf_serving/tensorflow_serving/model_servers/tensorflow_model_server is a two-line
# wrapper that starts `python -m orchestrator.server.main` with the same flags. Test data is the
# checkout's own servables/tensorflow/testdata (linked, never copied here). Nothing is downloaded.
#
# Needs this project's environment (TensorFlow, tensorflow-serving-api, portpicker: `make install`)
# or PYTHON=/path/to/python. Servers bind 127.0.0.1 (TFS_BIND_HOST); the tests reach them at
# localhost. Extra arguments name single tests (e.g. TensorflowModelServerTest.testPredictUDS).
# Exit status is the test run's. Set KEEP=1 to keep the scratch folder (servers' logs are on
# this terminal).
#
# --mnist also runs the checkout's example client, tensorflow_serving/example/mnist_client.py
# (with its mnist_input_data.py, both unchanged), against a server of a tiny MNIST-shaped model on
# synthetic MNIST files that scripts/offline_mnist.py writes, so nothing is downloaded. It reads
# the answers' float_val, so it passes only with TF Serving's typed output fields.
set -euo pipefail

usage() { echo "usage: $0 [--mnist] /path/to/tensorflow/serving [TestClass.testName ...]" >&2; exit 2; }
MNIST=0
if [[ ${1:-} == --mnist ]]; then MNIST=1; shift; fi
[[ $# -ge 1 ]] || usage
SERVING=$(cd "$1" && pwd) || usage
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
SRC=$SERVING/tensorflow_serving
TEST=$SRC/model_servers/tensorflow_model_server_test.py
BASE=$SRC/model_servers/test_util/tensorflow_model_server_test_base.py
DATA=$SRC/servables/tensorflow/testdata

for f in "$TEST" "$BASE" "$DATA"; do
  if [[ ! -e $f ]]; then
    echo "error: $f not found" >&2
    echo "fix: pass the root of a tensorflow/serving checkout (the folder holding tensorflow_serving/)" >&2
    exit 2
  fi
done
if [[ ! -x $PY ]]; then
  echo "error: no Python at $PY" >&2
  echo "fix: run 'make install' first, or set PYTHON=/path/to/python with this project installed" >&2
  exit 2
fi
missing=$("$PY" - <<'EOF'
import importlib.util
names = ["tensorflow", "tensorflow_serving.apis", "portpicker", "six", "grpc", "orchestrator.server.main"]
print(" ".join(n for n in names if importlib.util.find_spec(n.split(".")[0]) is None))
EOF
)
if [[ -n $missing ]]; then
  echo "error: $PY cannot import: $missing" >&2
  echo "fix: make install (portpicker is in the dev extra), or pip install the packages above" >&2
  exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tfs-upstream-suite.XXXXXX")
if [[ ${KEEP:-0} != 1 ]]; then trap 'rm -rf "$WORK"' EXIT; else echo "scratch folder: $WORK"; fi

# The test files, unchanged, in a package that shares its name with the installed
# tensorflow_serving (tensorflow-serving-api): extend_path lets both halves import.
PKG=$WORK/pkg/tensorflow_serving
mkdir -p "$PKG/model_servers/test_util"
cp "$TEST" "$PKG/model_servers/"
cp "$BASE" "$PKG/model_servers/test_util/"
echo 'import pkgutil; __path__ = pkgutil.extend_path(__path__, __name__)' > "$PKG/__init__.py"
touch "$PKG/model_servers/__init__.py" "$PKG/model_servers/test_util/__init__.py"

# TEST_SRCDIR as Bazel lays it out: test data linked, the server binary swapped.
SRCDIR=$WORK/srcdir
mkdir -p "$SRCDIR/tf_serving/tensorflow_serving/model_servers" "$SRCDIR/tf_serving/tensorflow_serving/servables"
ln -s "$SRC/servables/tensorflow" "$SRCDIR/tf_serving/tensorflow_serving/servables/tensorflow"
BIN=$SRCDIR/tf_serving/tensorflow_serving/model_servers/tensorflow_model_server
cat > "$BIN" <<EOF
#!/bin/sh
export TFS_BIND_HOST="\${TFS_BIND_HOST:-127.0.0.1}" PYTHONPATH="$ROOT\${PYTHONPATH:+:\$PYTHONPATH}"
exec "$PY" -m orchestrator.server.main "\$@"
EOF
chmod +x "$BIN"

mkdir -p "$WORK/tmp"
cd "$WORK"
echo "running $TEST against tfs-model-server ($ROOT)"
status=0
# The Keras tests build Keras 2 models (signature input "x"); Keras 3 would name it "inputs".
legacy_keras=0
"$PY" -c 'import tf_keras' 2>/dev/null && legacy_keras=1
TEST_SRCDIR=$SRCDIR TEST_TMPDIR=$WORK/tmp PYTHONPATH="$WORK/pkg:$ROOT" TF_CPP_MIN_LOG_LEVEL=2 \
  TF_USE_LEGACY_KERAS=${TF_USE_LEGACY_KERAS:-$legacy_keras} \
  "$PY" "$PKG/model_servers/tensorflow_model_server_test.py" "$@" || status=$?

if [[ $MNIST == 1 ]]; then
  EX=$SRC/example
  for f in mnist_client.py mnist_input_data.py; do
    [[ -f $EX/$f ]] || { echo "error: $EX/$f not found" >&2; exit 2; }
    cp "$EX/$f" "$WORK/"
  done
  "$PY" "$ROOT/scripts/offline_mnist.py" "$WORK/mnist_data" "$WORK/mnist_model"
  port=$("$PY" -c 'import portpicker; print(portpicker.pick_unused_port())')
  TFS_BIND_HOST=127.0.0.1 "$BIN" --port="$port" --model_name=mnist \
    --model_base_path="$WORK/mnist_model" > "$WORK/mnist_server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 300); do
    grep -q "Running gRPC ModelServer" "$WORK/mnist_server.log" && break
    kill -0 "$server" 2>/dev/null || break
    sleep 1
  done
  echo "running $EX/mnist_client.py against it (100 synthetic digits)"
  mnist_status=0
  (cd "$WORK" && "$PY" mnist_client.py --num_tests=100 --concurrency=4 --server="127.0.0.1:$port" \
    --work_dir="$WORK/mnist_data" > "$WORK/mnist_client.log" 2>&1) || mnist_status=$?
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  grep "Inference error rate" "$WORK/mnist_client.log" || tail -20 "$WORK/mnist_client.log"
  if [[ $mnist_status != 0 ]] || ! grep -q "Inference error rate: 0.0%" "$WORK/mnist_client.log"; then
    echo "mnist_client: FAILED" >&2
    [[ $status != 0 ]] || status=1
  else
    echo "mnist_client: OK"
  fi
fi
exit $status
