#!/usr/bin/env bash
# Install what `tfsctl convert`, `tfsctl web` and their tests need. Idempotent; seconds when done.
#
#   pip  (into .venv): tf2onnx + onnx + onnxruntime (ONNX), ai-edge-litert (TFLite runtime), and
#        tensorflowjs 4.22.0 with --no-deps plus the few packages its SavedModel converter uses.
#        (A normal resolve of tensorflowjs pulls tensorflow-decision-forests, which pins TF 2.19;
#        orchestrator.convert.tfjs keeps TF-DF, TF Hub and JAX from being needed at import.)
#   npm  (into js/node_modules, outside the Python package, from js/package-lock.json):
#        @tensorflow/tfjs 4.22.0 (pure JS: Node verification, and the browser page's tf.min.js,
#        copied into orchestrator/web/static/vendor/ as package data), playwright-core.
#   apt  chromium (the browser test drives /usr/bin/chromium) and nodejs/npm when node is missing.
#
# Env: PY (default .venv/bin/python), SKIP_APT=1 to leave system packages alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PY:-.venv/bin/python}
JS_DIR=js
VENDOR_DIR=orchestrator/web/static/vendor
PIP_PINS=(
  "tf2onnx==1.17.0"
  "onnx==1.23.2"
  "onnxruntime==1.32.0"
  "ai-edge-litert==2.3.0"
  "tf-keras==2.21.0"
  "six==1.17.0"
  "importlib_resources==7.1.0"
)
NO_DEPS_PINS=("tensorflowjs==4.22.0")

say() { printf '[install_convert_deps] %s\n' "$*"; }

missing_pins() {
  # Prints the pins whose installed version differs (or that are absent).
  "$PY" - "$@" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        ok = version(name) == want
    except PackageNotFoundError:
        ok = False
    if not ok:
        print(pin)
PYEOF
}

# --- apt: chromium, node ----------------------------------------------------------------------
if [[ "${SKIP_APT:-0}" != 1 ]]; then
  apt_wanted=()
  command -v chromium >/dev/null 2>&1 || apt_wanted+=(chromium)
  command -v node >/dev/null 2>&1 || apt_wanted+=(nodejs)
  command -v npm >/dev/null 2>&1 || apt_wanted+=(npm)
  if ((${#apt_wanted[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
      say "need root to apt-get install ${apt_wanted[*]} (or run with SKIP_APT=1)"; exit 1
    fi
    say "apt-get install ${apt_wanted[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_wanted[@]}" >/dev/null
  fi
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ((node_major < 20)); then
  say "node $(node --version 2>/dev/null || echo missing) is too old: playwright-core needs Node >= 20"; exit 1
fi

# --- pip ----------------------------------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
  say "no Python at $PY: run 'make install' first (or set PY=...)"; exit 1
fi
mapfile -t todo < <(missing_pins "${PIP_PINS[@]}")
if ((${#todo[@]})); then
  say "pip install ${todo[*]}"
  "$PY" -m pip install -q --disable-pip-version-check "${todo[@]}"
fi
mapfile -t todo < <(missing_pins "${NO_DEPS_PINS[@]}")
if ((${#todo[@]})); then
  say "pip install --no-deps ${todo[*]}"
  "$PY" -m pip install -q --disable-pip-version-check --no-deps "${todo[@]}"
fi

# --- npm ----------------------------------------------------------------------------------------
# npm ci writes node_modules/.package-lock.json; when it matches the lock file, nothing to do.
lock="$JS_DIR/package-lock.json"
installed="$JS_DIR/node_modules/.package-lock.json"
if [[ ! -f "$installed" ]] || ! "$PY" - "$lock" "$installed" <<'PYEOF'
import json, sys
want = json.load(open(sys.argv[1]))["packages"]
have = json.load(open(sys.argv[2]))["packages"]
wanted = {k: v.get("version") for k, v in want.items() if k}
present = {k: v.get("version") for k, v in have.items() if k}
sys.exit(0 if wanted == present else 1)
PYEOF
then
  say "npm ci in $JS_DIR (@tensorflow/tfjs, playwright-core)"
  # --ignore-scripts: nothing may download binaries at install time (no browser downloads).
  npm ci --prefix "$JS_DIR" --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
fi
# The page ships only the built bundle it loads, as package data (not the 300 MB of node_modules).
bundle="$JS_DIR/node_modules/@tensorflow/tfjs/dist/tf.min.js"
if ! cmp -s "$bundle" "$VENDOR_DIR/tf.min.js"; then
  mkdir -p "$VENDOR_DIR"
  cp "$bundle" "$VENDOR_DIR/tf.min.js.tmp" && mv "$VENDOR_DIR/tf.min.js.tmp" "$VENDOR_DIR/tf.min.js"
fi

versions=$("$PY" -c 'from importlib.metadata import version as v; print(", ".join(f"{n} {v(n)}" for n in ("tf2onnx", "onnxruntime", "ai-edge-litert", "tensorflowjs")))')
say "ok: $versions; node $(node --version); $(chromium --version 2>/dev/null || echo 'chromium: not installed')"
