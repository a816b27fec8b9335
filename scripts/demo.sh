#!/usr/bin/env bash
# `npm run demo` (after the build): make sure an engine and the local base image exist, then run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-docker.sh
bash scripts/ensure-base-image.sh
exec node dist/demo/main.js "$@"
