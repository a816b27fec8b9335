#!/usr/bin/env bash
# Builds the local Python base image once per machine (no registry is reachable, nothing can be pulled).
# debootstrap a minimal Debian bookworm with python3 + venv + pip, then `docker import` it.
set -euo pipefail
image=${RGRID_TEST_BASE_IMAGE:-rgrid-test/python:bookworm}
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image present"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "ensure-base-image: debootstrap is not installed" >&2; exit 1; }
root=$(mktemp -d /tmp/rgrid-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm into $root (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm "$root" >/tmp/rgrid-debootstrap.log 2>&1 \
  || { tail -n 30 /tmp/rgrid-debootstrap.log >&2; exit 1; }
# Trim what a runtime image does not need; keeps the import and every build context small.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$image" >/dev/null
echo "built base image $image"
