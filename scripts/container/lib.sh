# Sourced by image.sh and image_test.sh: the names make image gives, and the one build command.
TAG=$(sed -n 's/^appVersion: "\(.*\)"/\1/p' helm/facesweep/Chart.yaml)
BASE=localhost/facesweep-base:bookworm

# build_image FLAVOR CONTEXT TAG...: the cpu or cuda image from a staged CONTEXT.
build_image() {
  local flavor=$1 context=$2 extra=none pg=1 tags=()
  shift 2
  if [ "$flavor" = cuda ]; then extra=cuda; pg=; fi
  for t in "$@"; do tags+=(-t "$t"); done
  # --network host: the package step reaches Debian's mirror the way the host does.
  podman build --quiet --layers --network host -f scripts/container/Containerfile \
    --build-arg BASE="$BASE" --build-arg TORCH_EXTRA=$extra --build-arg WITH_POSTGRES=$pg \
    "${tags[@]}" "$context" >/dev/null
}
