#!/usr/bin/env bash
# `npm run demo` (after the build): prepare the machine (packages, Docker engine, base image — the same
# script as `npm test` and CI), then run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
exec node dist/demo/main.js "$@"
