#!/usr/bin/env bash
# Prints the `systemd-analyze security --offline=true` exposure of both units (docs/operations.md).
#   scripts/systemd-exposure.sh          one line per unit
#   scripts/systemd-exposure.sh -v       plus the checks that still count against each unit
# Works without systemd as PID 1. verify/security look for the units' binaries, so the units are copied
# to a scratch directory with /usr/bin/node replaced by the node on PATH (as test/systemd does).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found (apt-get install systemd)" >&2; exit 1; }
node_bin=$(command -v node || echo /usr/bin/node)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
echo "$(systemd-analyze --version | head -1)"
for unit in rgrid-agent.service rgrid-control.service; do
  sed "s#/usr/bin/node #${node_bin} #" "systemd/$unit" >"$scratch/$unit"
  report=$(SYSTEMD_COLORS=0 systemd-analyze security --offline=true --no-pager "$scratch/$unit")
  grep -o 'Overall exposure level for .*' <<<"$report"
  if [ "${1:-}" = "-v" ]; then
    grep '✗' <<<"$report" | sed 's/^/    /'
  fi
done
