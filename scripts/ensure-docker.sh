#!/usr/bin/env bash
# Starts a Docker engine if none answers, and waits for its socket.
# The sandbox has no registry and no bridge networking: containers use network "none" or "host".
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null || { echo "ensure-docker: dockerd is not installed (apt-get install docker.io)" >&2; exit 1; }
log=${RGRID_DOCKERD_LOG:-/tmp/rgrid-dockerd.log}
nohup dockerd --bridge=none --iptables=false >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 1
done
echo "ensure-docker: dockerd did not answer within 60 s; see $log" >&2
tail -n 20 "$log" >&2 || true
exit 1
