#!/usr/bin/env bash
# make bench-fetch: (a) decode+letterbox floor, (b) the fetch tier end to end, (c) img2dataset,
# on the same local corpus served by nginx on loopback. Prints images/s per core and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
CACHE="${FACESWEEP_CACHE:-$HOME/.cache/facesweep}"
CORPUS="$CACHE/corpus"
CORES=$(nproc)
need=()
command -v nginx >/dev/null || need+=(nginx-light)
ls /usr/share/wallpapers/*/contents/images >/dev/null 2>&1 || need+=(plasma-workspace-wallpapers)
[ -d /usr/share/backgrounds/mate ] || need+=(mate-backgrounds)
if [ ${#need[@]} -gt 0 ]; then apt-get install -y -qq "${need[@]}" >/dev/null; fi
[ -x "$CACHE/i2d/bin/img2dataset" ] || { python3 -m venv "$CACHE/i2d" && "$CACHE/i2d/bin/pip" install -q img2dataset==1.47.0; }
"$FACESWEEP_VENV/bin/python" scripts/make_corpus.py "$CORPUS" "${BENCH_CORPUS:-400}"
"$FACESWEEP_VENV/bin/python" scripts/make_adversarial.py "$CACHE/adversarial"
cargo build -q --release -p facesweep
BIN=target/release/facesweep

tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$tmp/nginx.conf" <<NGINX
user root;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  client_body_temp_path $tmp; proxy_temp_path $tmp; fastcgi_temp_path $tmp; uwsgi_temp_path $tmp; scgi_temp_path $tmp;
  server { listen 127.0.0.1:$port; root $CORPUS; location /adv/ { alias $CACHE/adversarial/; } }
}
NGINX
nginx -c "$tmp/nginx.conf" -p "$tmp"
trap 'nginx -c "$tmp/nginx.conf" -p "$tmp" -s stop 2>/dev/null || true; rm -rf "$tmp"' EXIT
ls "$CORPUS" | grep -E '\.(jpg|png|webp)$' | sed "s#^#http://127.0.0.1:$port/#" > "$tmp/urls.txt"
N=$(wc -l < "$tmp/urls.txt")
echo "corpus: $N images ($(du -sh "$CORPUS" | cut -f1)), $CORES cores, served by nginx on 127.0.0.1:$port"

# Both wires: the whole RGB canvas (what detectors took before PixelFormat) and the default,
# the resized content as YUV 4:2:0; "to the detector" is the bytes/image each puts on the wire.
echo "(a) and (b) with --wire canvas:"
$BIN bench decode "$CORPUS" --passes 2 --wire canvas
$BIN bench fetch "$tmp/urls.txt" -- --allow-networks 127.0.0.0/8 --concurrency 256 --per-host 256 --wire canvas
echo "(a) and (b) with --wire i420 (the default):"
a=$($BIN bench decode "$CORPUS" --passes 2 --wire i420 | tee /dev/stderr | sed -E 's/.*: ([0-9.]+) img\/s/\1/')
b=$($BIN bench fetch "$tmp/urls.txt" -- --allow-networks 127.0.0.0/8 --concurrency 256 --per-host 256 --wire i420 | tee /dev/stderr | grep '^fetched' | sed -E 's/.*: ([0-9.]+) img\/s/\1/')
start=$(date +%s.%N)
"$CACHE/i2d/bin/img2dataset" --url_list "$tmp/urls.txt" --input_format txt --output_folder "$tmp/i2d" \
  --processes_count "$CORES" --thread_count 64 --image_size 640 --resize_mode border --output_format files \
  --timeout 10 --retries 0 --enable_wandb False --disallowed_header_directives '[]' >"$tmp/i2d.log" 2>&1
end=$(date +%s.%N)
ok_c=$(python3 -c 'import glob,json,sys; print(sum(json.load(open(f))["successes"] for f in glob.glob(sys.argv[1]+"/*_stats.json")))' "$tmp/i2d")
c=$(python3 -c "print(round($N/($end-$start),1))")
echo "img2dataset: $ok_c ok of $N in $(python3 -c "print(round($end-$start,2))") s: $c img/s"
# (d) memory: every adversarial input 32 times, all at once.
for i in $(seq 32); do ls "$CACHE/adversarial" | grep -v stamp | sed "s#^#http://127.0.0.1:$port/adv/#;s#\$#?r=$i#"; done > "$tmp/adv.txt"
echo "adversarial: $(wc -l < "$tmp/adv.txt") URLs (24 MP PNGs, 30 MB non-images) at concurrency 256:"
$BIN bench fetch "$tmp/adv.txt" -- --allow-networks 127.0.0.0/8 --concurrency 256 --per-host 256
python3 - "$a" "$b" "$c" "$CORES" <<'PY'
import sys
a, b, c, cores = map(float, sys.argv[1:])
print(f"per core: (a) decode floor {a/cores:.1f}  (b) facesweep fetch {b/cores:.1f}  (c) img2dataset {c/cores:.1f} img/s")
print(f"(b)/(c) = {b/c:.2f}x (goal >= 4x)   (b)/(a) = {100*b/a:.0f}% (goal >= 80%)")
PY
