#!/usr/bin/env bash
# `make image-test`: builds both images (make image), checks that they cache as layers should
# and that the CUDA image resolves every library the detector loads, then runs the mesh and
# the CLI as real containers (tests/tests/it/image.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/image.sh
source scripts/env.sh
source scripts/container/lib.sh
CPU=localhost/facesweep:$TAG
CUDA=localhost/facesweep-cuda:$TAG
layers() { podman image inspect --format '{{range .RootFS.Layers}}{{.}} {{end}}' "$1"; }

# 1. Nothing changed: the rebuild is the same image (every layer from cache).
before=$(podman image inspect --format '{{.Id}}' "$CPU")
build_image cpu target/image "$CPU"
[ "$(podman image inspect --format '{{.Id}}' "$CPU")" = "$before" ] || { echo "image-test: unchanged rebuild made a new image" >&2; exit 1; }
# 2. A code change (another binary) rebuilds only the last layer: every layer below is shared.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; podman rmi -f localhost/facesweep:layer-check >/dev/null 2>&1 || true' EXIT
cp -a target/image/. "$tmp/"
echo "changed" >> "$tmp/bin/facesweep-fetcher"
start=$(date +%s)
build_image cpu "$tmp" localhost/facesweep:layer-check
read -ra a <<<"$(layers "$CPU")"; read -ra b <<<"$(layers localhost/facesweep:layer-check)"
[ ${#a[@]} = ${#b[@]} ] && [ "${a[*]:0:${#a[@]}-1}" = "${b[*]:0:${#b[@]}-1}" ] && [ "${a[-1]}" != "${b[-1]}" ] \
  || { echo "image-test: a binary change rebuilt more than the binaries layer" >&2; exit 1; }
echo "image-test: unchanged rebuild cached; binary change rebuilt 1 of ${#a[@]} layers in $(( $(date +%s) - start )) s"
# 3. The CUDA image resolves everything libtorch_cuda and cuDNN need but the driver's libcuda.
missing=$(podman run --rm "$CUDA" bash -c 'cd /opt/facesweep/lib && for l in libtorch_cuda.so libcudnn_*.so.9 libcaffe2_nvrtc.so; do ldd "$l"; done' \
  | grep 'not found' | grep -v 'libcuda.so.1' | sort -u || true)
[ -z "$missing" ] || { echo "image-test: the CUDA image lacks: $missing" >&2; exit 1; }
echo "image-test: $CUDA resolves every CUDA library but the driver's libcuda.so.1"
# 4. The mesh and the CLI as containers.
# --workspace: the package set tier 2 built the test binary with, so nothing compiles again.
FACESWEEP_IMAGE=$CPU cargo test -q --workspace --test it image:: -- --ignored --test-threads=1
