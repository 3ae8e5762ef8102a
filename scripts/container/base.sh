#!/usr/bin/env bash
# The base image without a registry: a minimal Debian bookworm made by mmdebstrap from
# Debian's package mirror and imported into podman. Built once; kept while it exists.
set -euo pipefail
BASE=${1:-localhost/facesweep-base:bookworm}
podman image exists "$BASE" && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A fixed epoch makes the tarball reproducible for the same package versions.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000} \
  mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm "$tmp/rootfs.tar"
podman import --quiet --change 'CMD ["/bin/bash"]' "$tmp/rootfs.tar" "$BASE" >/dev/null
echo "base: $BASE ($(podman image inspect --format '{{.Size}}' "$BASE" | numfmt --to=iec))"
