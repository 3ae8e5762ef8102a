#!/usr/bin/env bash
# Stages what the Containerfile copies into target/image: stripped release binaries, the
# LibTorch libraries they load (CPU set; CUDA set for facesweep-cuda), and the model.
# Libraries are the NEEDED closure of what is loaded, found in the venv's torch wheel.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
OUT=target/image
NV="$LIBTORCH/../nvidia"
SEARCH=("$LIBTORCH/lib" "$NV"/*/lib)
rm -rf "$OUT" && mkdir -p "$OUT"/{bin,lib-cpu,lib-cuda,lib-none,models}

cargo build -q --release -p facesweep -p facesweep-delegator -p facesweep-fetcher \
  -p facesweep-detector -p facesweep-results
for b in facesweep facesweep-delegator facesweep-fetcher facesweep-detector facesweep-results; do
  strip -o "$OUT/bin/$b" "target/release/$b"
done
cp models/retinaface_mnet025*.pt models/retinaface_mnet025*.json "$OUT/models/"

find_lib() { for d in "${SEARCH[@]}"; do if [ -e "$d/$1" ]; then echo "$d/$1"; return; fi; done; }

# copy_closure DEST FILE...: each file and, recursively, every NEEDED library the wheel has
# (system libraries such as libc and libstdc++ come from the base image).
declare -A seen
copy_closure() {
  local dest=$1; shift
  local f lib path
  for f in "$@"; do
    path=$(find_lib "$f"); [ -n "$path" ] || { echo "stage: $f not in the torch wheel" >&2; exit 1; }
    if [ -n "${seen[$f]:-}" ]; then continue; fi
    seen[$f]=1
    cp -L "$path" "$dest/$f"
    for lib in $(readelf -d "$path" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p'); do
      if [ -n "$(find_lib "$lib")" ]; then copy_closure "$dest" "$lib"; fi
    done
  done
}
# What the binaries link (libtorch_cpu and its CUDA runtime stubs).
copy_closure "$OUT/lib-cpu" $(readelf -d "$OUT/bin/facesweep-detector" | sed -n 's/.*NEEDED.*\[\(lib\(torch\|c10\|gomp\).*\)\]/\1/p')
# What the detector dlopens on a GPU: libtorch_cuda and its closure, cuDNN's engine
# libraries (loaded by name at run time) and NVRTC for TorchScript's fused kernels.
copy_closure "$OUT/lib-cuda" libtorch_cuda.so libcaffe2_nvrtc.so libnvrtc-builtins.so.13.0 \
  libcudnn_graph.so.9 libcudnn_ops.so.9 libcudnn_cnn.so.9 libcudnn_heuristic.so.9 \
  libcudnn_engines_precompiled.so.9 libcudnn_engines_runtime_compiled.so.9
echo "stage: $(du -sh "$OUT/bin" | cut -f1) binaries, $(du -sh "$OUT/lib-cpu" | cut -f1) CPU libraries," \
  "$(du -sh "$OUT/lib-cuda" | cut -f1) CUDA libraries"
