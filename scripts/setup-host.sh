#!/usr/bin/env bash
# Prepares this machine for the demo, the tests and CI — the one script behind `npm run demo`, `npm test`
# and .ci/run. It says what it does and does only what is not done yet:
#   1. installs the Debian packages that are missing (docker.io, debootstrap, docker-registry, python3,
#      systemd, prometheus for promtool, procps for ps), only as root on Debian or Ubuntu; elsewhere it
#      stops with a one-line instruction;
#   2. starts a Docker engine if none answers (dockerd --bridge=none --iptables=false, log in /tmp);
#   3. builds the Python base image once (debootstrap bookworm + python3, pip, venv; about a minute);
#   4. as root, creates the system user `postgres` if there is none: PostgreSQL refuses to run as root, so
#      the embedded server of the demo and the tests runs as that user (not needed with DATABASE_URL).
# Nothing here reaches beyond the Debian mirror that apt is configured with.
set -euo pipefail
cd "$(dirname "$0")/.."
base_image=${RGRID_TEST_BASE_IMAGE:-rgrid-test/python:bookworm}

# Each tool the tests use, and the Debian package that brings it. debootstrap is needed only while the
# base image does not exist; the engine only when no engine answers already.
missing=()
engine_up() { docker info >/dev/null 2>&1; }
engine_up || command -v dockerd >/dev/null || missing+=(docker.io)
if ! { engine_up && docker image inspect "$base_image" >/dev/null 2>&1; }; then
  command -v debootstrap >/dev/null || missing+=(debootstrap)
fi
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v python3 >/dev/null || missing+=(python3)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v promtool >/dev/null || missing+=(prometheus)
# The secrets tests read every process's command line with ps, as an operator would.
command -v ps >/dev/null || missing+=(procps)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null || [ ! -f /etc/debian_version ]; then
    echo "setup-host: missing ${missing[*]}: install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}), or run as root on Debian" >&2
    exit 1
  fi
  echo "setup-host: installing ${missing[*]} with apt-get (once per machine; log /tmp/rgrid-apt.log)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >/tmp/rgrid-apt.log 2>&1 \
    || { tail -n 20 /tmp/rgrid-apt.log >&2; echo "setup-host: apt-get failed (log /tmp/rgrid-apt.log)" >&2; exit 1; }
fi

if ! engine_up; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host: no Docker engine answers on ${DOCKER_HOST:-/var/run/docker.sock}: start one (sudo systemctl start docker), or run as root" >&2
    exit 1
  fi
  echo "setup-host: starting a Docker engine (dockerd --bridge=none --iptables=false; log /tmp/rgrid-dockerd.log)"
  bash scripts/ensure-docker.sh
fi
RGRID_TEST_BASE_IMAGE=$base_image bash scripts/ensure-base-image.sh

if [ "$(id -u)" -eq 0 ] && [ -z "${DATABASE_URL:-}" ] && ! id postgres >/dev/null 2>&1; then
  echo "setup-host: creating the system user postgres (the embedded PostgreSQL refuses to run as root)"
  useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin postgres
fi
