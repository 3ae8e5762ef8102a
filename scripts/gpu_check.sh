#!/usr/bin/env bash
# Every detector-tier measurement in one run (`make gpu-check`), for the minutes a GPU machine
# is lent: writes report.md, report.json and nvidia-smi samples into $OUT. With CUDA it runs the
# full sizes; without, small ones (CI runs it that way, so it is known to work beforehand).
# On the GPU machine (no cargo): `make gpu-bundle` here, carry .gpu, run with
# FACESWEEP_BIN=.gpu/facesweep; LibTorch comes from that machine's torch wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/target/gpu-check}
mkdir -p "$OUT"
BIN=${FACESWEEP_BIN:-}
MODEL=models/retinaface_mnet025.pt
SAMPLES=${FACESWEEP_SAMPLES:-$HOME/.cache/facesweep/samples}
if [ -n "$BIN" ]; then
    # A carried bundle: its own model and photos, LibTorch from the machine's torch.
    [ -d .gpu/models ] && MODEL=.gpu/models/retinaface_mnet025.pt
    [ -d .gpu/samples ] && SAMPLES=.gpu/samples
    for torch in /opt/torch/.venv/lib/python3*/site-packages/torch; do
        [ -d "$torch/lib" ] || continue
        LD_LIBRARY_PATH="$torch/lib:$(ls -d "$torch"/../nvidia/*/lib "$torch"/../nvidia/*/*/lib 2>/dev/null | paste -sd:):${LD_LIBRARY_PATH:-}"
        export LD_LIBRARY_PATH
    done
    # No PostgreSQL there: the bundle's own (for the whole-mesh part).
    if [ -z "${PG_BIN:-}" ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && [ -f .gpu/pg.tar.xz ]; then
        pg=/tmp/facesweep-pg
        mkdir -p "$pg" && tar -C "$pg" -xJf .gpu/pg.tar.xz
        PG_BIN=$(ls -d "$pg"/usr/lib/postgresql/*/bin | tail -1)
        export PG_BIN LD_LIBRARY_PATH="$pg/libs:${LD_LIBRARY_PATH:-}"
        chmod -R a+rX "$pg"
        if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /bin/false postgres
        fi
    fi
else
    source scripts/env.sh
    # The workspace's package set, as `make test`'s other builds use: `-p facesweep` alone
    # resolves features differently and compiled 22 crates a second time.
    cargo build -q --workspace --bins
    BIN=target/debug/facesweep
fi
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    nvidia-smi -L > "$OUT/device.txt"
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits \
        -lms 500 > "$OUT/nvidia-smi.csv" &
    SMI=$!
    trap 'kill $SMI 2>/dev/null || true' EXIT
    SIZES=(--batches 1,8,32,64,128,256,512 --iters 10 --streams 32 --per-stream 2000 --mesh-urls 20000)
else
    echo "no GPU: small sizes" > "$OUT/device.txt"
    SIZES=(--batches 1,2 --iters 2 --streams 2 --per-stream 6 --mesh-urls 16)
fi
timeout 480 "$BIN" bench gpu --out "$OUT" --model "$MODEL" --samples "$SAMPLES" "${SIZES[@]}"
if [ -s "$OUT/nvidia-smi.csv" ]; then
    awk -F', ' '{u+=$2; n++; if ($3>m) m=$3} END {printf "\n## nvidia-smi\n\n%d samples: mean GPU utilisation %.1f%%, peak memory used %d MiB\n", n, u/n, m}' \
        "$OUT/nvidia-smi.csv" >> "$OUT/report.md"
fi
# Green means every part produced figures (or was skipped for want of a GPU), none failed.
python3 - "$OUT/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
failed = [k for k in ("parity", "inprocess", "grpc", "mesh") if isinstance(r.get(k), dict) and "error" in r[k]]
assert not failed, f"gpu-check parts failed: {[(k, r[k]['error']) for k in failed]}"
assert r["inprocess"] and all(row["images_per_s"] > 0 for row in r["inprocess"]), r["inprocess"]
assert r["grpc"] and all(row["images"] > 0 for row in r["grpc"]), r["grpc"]
assert r["mesh"].get("skipped") or r["mesh"]["by_status"].get("ok", 0) == r["mesh"]["urls"], r["mesh"]
print("gpu-check green:", sys.argv[1])
PY
