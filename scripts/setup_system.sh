#!/usr/bin/env bash
# Installs the system packages the tests use (Docker engine, HAProxy, busybox for the stand-in
# image, wrk and h2load (nghttp2-client) for benchmarks, Prometheus and promtool for monitoring) when missing, and starts
# dockerd when no daemon answers.
# Idempotent and quick when everything is there. Needs root (as CI and the dev machines are).
set -euo pipefail

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
# Prometheus and promtool (`tfsctl monitor`); the package's service is not started here.
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd"
  (dockerd >/tmp/dockerd.log 2>&1 &)
  deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "setup: dockerd did not answer within 60 s; its log:" >&2
      tail -n 30 /tmp/dockerd.log >&2 || true
      exit 1
    fi
    sleep 0.5
  done
fi
echo "setup: docker $(docker version --format '{{.Server.Version}}') ready"
