#!/usr/bin/env bash
# Canary rollout step for a CI pipeline: exit 0 when VERSION was promoted, 1 when it was rolled
# back, 2+ for bad input. Writes the rollout report (PNG + JSON) as a build artifact either way.
#
#   scripts/canary_rollout.sh NAME VERSION [tfsctl rollout start options...]
#   e.g. scripts/canary_rollout.sh demo 2 --steps 10,50,100 --interval 1m --max-error-rate 0.005
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 NAME VERSION [tfsctl rollout start options]" >&2
  exit 2
fi
name=$1 version=$2
shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
tfsctl=${TFSCTL:-$here/.venv/bin/tfsctl}
[ -x "$tfsctl" ] || tfsctl=tfsctl

"$tfsctl" rollout start "$name" --version "$version" "$@"
status=$?
"$tfsctl" rollout report "$name" --out "rollout-$name-v$version.png" || true
exit "$status"
