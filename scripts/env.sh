# Sourced by the Makefile: where LibTorch lives (inside the venv's torch wheel).
CACHE="${FACESWEEP_CACHE:-$HOME/.cache/facesweep}"
export LIBTORCH="$("$CACHE/venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FACESWEEP_VENV="$CACHE/venv"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
export PATH="$CACHE/node/node_modules/.bin:$PATH"
# podman/buildah settings this project needs (runc; no default ulimits).
export CONTAINERS_CONF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/container/containers.conf"
