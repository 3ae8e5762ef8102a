#!/usr/bin/env bash
# `make image`: the facesweep (CPU) and facesweep-cuda images, built with podman (no Docker
# daemon, no registry) from a local Debian base. Tags: localhost/NAME:<chart appVersion>
# and :latest, the names the Helm chart defaults to.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for tool in podman buildah runc mmdebstrap; do command -v $tool >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "image: installing ${need[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
source scripts/env.sh
source scripts/container/lib.sh
FLAVORS=${IMAGE_FLAVORS:-cpu cuda}

scripts/container/base.sh "$BASE"
scripts/container/stage.sh
for flavor in $FLAVORS; do
  name=facesweep; if [ "$flavor" = cuda ]; then name=facesweep-cuda; fi
  start=$(date +%s)
  build_image "$flavor" target/image "localhost/$name:$TAG" "localhost/$name:latest"
  size=$(podman image inspect --format '{{.Size}}' "localhost/$name:$TAG" | numfmt --to=iec)
  echo "image: localhost/$name:$TAG $size ($(( $(date +%s) - start )) s)"
done
