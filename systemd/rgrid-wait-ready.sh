#!/bin/sh
# Readiness probe for the units' ExecStartPost= (see the comment on Type= in rgrid-agent.service).
#
#   rgrid-wait-ready.sh unix:/run/rgrid/agent.sock /v1/health
#   rgrid-wait-ready.sh http://127.0.0.1:8080 /readyz
#
# Polls until the endpoint answers 200, then exits 0. It has no deadline of its own: systemd's
# TimeoutStartSec= bounds it (the unit then fails and Restart=on-failure tries again), and systemd kills
# it when the main process exits first. Node is used rather than curl because the units already require
# it; the probe is one short-lived node process per attempt.
set -u
target=${1:?usage: rgrid-wait-ready.sh unix:/path/to.sock|http://host:port path}
path=${2:-/}
node=${RGRID_NODE:-/usr/bin/node}

probe='
const [target, path] = process.argv.slice(1);
const http = require("node:http");
const options = target.startsWith("unix:") ? { socketPath: target.slice(5), path } : new URL(path, target);
const req = http.get(options, (res) => { res.resume(); process.exit(res.statusCode === 200 ? 0 : 1); });
req.setTimeout(2000, () => req.destroy(new Error("timeout")));
req.on("error", () => process.exit(1));
'

while :; do
  if "$node" -e "$probe" "$target" "$path"; then
    exit 0
  fi
  sleep 0.25
done
