#!/usr/bin/env bash
# make bench-fetch [CORPUS=dir | URLS=file] [OLD_BIN=path] [ROUNDS=2] [MIN_URLS=2000]
# (a) the decode floor (decode + letterbox from memory, every core), overall and per kind;
# (b) the fetch tier end to end; (c) img2dataset; all on the same corpus behind nginx on
# loopback, in one run. Default corpus: scripts/make_corpus.py's web mix (1,000 images).
# CORPUS: any folder of images (kinds are sniffed from the bytes). URLS: a list of image URLs,
# downloaded once into a folder first. OLD_BIN: a second facesweep binary (an older commit's
# build), measured alternately with this one (new, old, new, old…): medians and ratios, since a
# shared machine is noisy. Each served file appears under several URLs (?r=N) until there are
# MIN_URLS, plus 4% that answer 404 (as on the web), so start-up does not dominate.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
CACHE="${FACESWEEP_CACHE:-$HOME/.cache/facesweep}"
CORES=$(nproc)
ROUNDS="${ROUNDS:-2}"
MIN_URLS="${MIN_URLS:-2000}"
need=()
command -v nginx >/dev/null || need+=(nginx-light)
if [ -z "${CORPUS:-}${URLS:-}" ]; then
  ls /usr/share/wallpapers/*/contents/images >/dev/null 2>&1 || need+=(plasma-workspace-wallpapers)
  [ -d /usr/share/backgrounds/mate ] || need+=(mate-backgrounds)
fi
if [ ${#need[@]} -gt 0 ]; then apt-get install -y -qq "${need[@]}" >/dev/null; fi
[ -x "$CACHE/i2d/bin/img2dataset" ] || { python3 -m venv "$CACHE/i2d" && "$CACHE/i2d/bin/pip" install -q img2dataset==1.47.0; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -n "${URLS:-}" ]; then
  mkdir "$tmp/download"
  echo "downloading $(grep -c . "$URLS") URLs from $URLS (failures skipped)"
  grep . "$URLS" | nl -nrz -w6 | xargs -P 16 -L 1 sh -c \
    'curl -sfL --max-time 20 --max-filesize 50000000 -o "$0/$1" "$2" || true' "$tmp/download"
  CORPUS="$tmp/download"
elif [ -z "${CORPUS:-}" ]; then
  CORPUS="$CACHE/corpus-web"
  "$FACESWEEP_VENV/bin/python" scripts/make_corpus.py "$CORPUS" "${BENCH_CORPUS:-1000}" --mix=web
fi
"$FACESWEEP_VENV/bin/python" scripts/make_adversarial.py "$CACHE/adversarial"
python3 scripts/corpus_kinds.py "$CORPUS" "$tmp/c" > "$tmp/kinds.tsv"
# The fetch tier without LibTorch, as the fetcher service runs (`facesweep bench` would add
# the CLI's detector start-up, ~0.3 s, to each run). BIN/OLD_BIN may also be facesweep CLIs.
if [ -z "${BIN:-}" ]; then cargo build -q --release -p facesweep-fetcher; BIN=target/release/facesweep-fetch-bench; fi
# Sets `cmd` to what runs BIN's `fetch` and `decode`, whichever of the two binaries BIN is.
# Asked of the binary itself, so any copy of either works whatever its file is called.
bench_argv() { cmd=("$1"); if "$1" bench --help >/dev/null 2>&1; then cmd+=(bench); fi; }
bins=("$BIN")
[ -n "${OLD_BIN:-}" ] && bins+=("$OLD_BIN")

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
  server { listen 127.0.0.1:$port; root $tmp/c/all; location /adv/ { alias $CACHE/adversarial/; } }
}
NGINX
nginx -c "$tmp/nginx.conf" -p "$tmp"
trap 'nginx -c "$tmp/nginx.conf" -p "$tmp" -s stop 2>/dev/null || true; rm -rf "$tmp"' EXIT
python3 - "$tmp/c/all" "http://127.0.0.1:$port" "$MIN_URLS" > "$tmp/urls.txt" <<'PY'
import os, sys
names, base, want = sorted(os.listdir(sys.argv[1])), sys.argv[2], int(sys.argv[3])
urls, r = [], 0
while len(urls) < want * 0.96 or r == 0:
    r += 1
    urls += [f"{base}/{n}?r={r}" for n in names]
urls += [f"{base}/missing{i}.jpg" for i in range(len(urls) // 24)]  # 4% broken
print("\n".join(urls))
PY
N=$(wc -l < "$tmp/urls.txt")
files=$(ls "$tmp/c/all" | wc -l)
echo "corpus: $files images ($(du -shL "$tmp/c/all" | cut -f1)) from $CORPUS; $N URLs; $CORES cores; $(date -u +%F) $(uname -m)"
printf 'kind\tfiles\tMB\tmean MP\n'; cat "$tmp/kinds.tsv"

res="$tmp/results.tsv"
# `row METRIC BIN COMMAND…`: appends COMMAND's output as METRIC's value; a failing command ends
# the run (a value left empty would only vanish from the medians).
row() {
  local v
  v=$("${@:3}") || { echo "bench_fetch: $1 failed for $2" >&2; exit 1; }
  printf '%s\t%s\t%s\n' "$1" "$2" "$v" | tee -a "$res"
}
# `decode DIR PASSES`: img/s of the binary `bench_argv` last set.
decode() { "${cmd[@]}" decode "$1" --passes "$2" --wire i420 | grep '^decoded' | sed -E 's/.*: ([0-9.]+) img\/s/\1/'; }
# Runs a command; its stdout to $tmp/out, its CPU seconds (user + sys, children included) printed.
cpu_of() {
  python3 -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], "w"), stderr=subprocess.STDOUT)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(round(u.ru_utime + u.ru_stime, 2))' "$tmp/out" "$@"
}
# `cpu_ms DIR PASSES BENCH_ARGV…`: CPU ms per decode (user + sys, start-up measured with
# --passes 0 and taken off): steadier than wall time when other work shares the machine.
cpu_ms() {
  python3 - "$@" <<'PY'
import os, resource, subprocess, sys
d, p, pre = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def cpu(passes):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(pre + ["decode", d, "--passes", str(passes), "--wire", "i420"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
n = len(os.listdir(d))
print(round(1000 * (cpu(p) - cpu(0)) / (n * p), 3))
PY
}
for r in $(seq "$ROUNDS"); do
  for b in "${bins[@]}"; do
    echo "round $r: $b"
    bench_argv "$b"
    row floor "$b" decode "$tmp/c/all" 2
    row floor-cpu-ms "$b" cpu_ms "$tmp/c/all" 1 "${cmd[@]}"
    for k in $(ls "$tmp/c/kinds"); do
      n=$(ls "$tmp/c/kinds/$k" | wc -l)
      row "kind:$k" "$b" cpu_ms "$tmp/c/kinds/$k" $(( (200 + n - 1) / n )) "${cmd[@]}"
    done
    start=$(date +%s.%N)
    c=$(cpu_of "${cmd[@]}" fetch "$tmp/urls.txt" -- --allow-networks 127.0.0.0/8 --concurrency 256 --per-host 256 --wire i420)
    end=$(date +%s.%N)
    ok=$(sed -nE 's/^fetched ([0-9]+) ok.*/\1/p' "$tmp/out")
    # Like img2dataset's below: images decoded over the whole process's wall time, start-up in.
    printf 'fetch\t%s\t%s\n' "$b" "$(python3 -c "print(round($ok/($end-$start),1))")" | tee -a "$res"
    # From its first request to its last answer: what the floor (no start-up either) compares to.
    secs=$(sed -nE 's/^fetched .* in ([0-9.]+) s:.*/\1/p' "$tmp/out")
    printf 'fetch-run\t%s\t%s\n' "$b" "$(python3 -c "print(round($ok/$secs,1))")" | tee -a "$res"
    printf 'fetch-cpu-ms\t%s\t%s\n' "$b" "$(python3 -c "print(round(1000 * $c / $N, 3))")" | tee -a "$res"
  done
  rm -rf "$tmp/i2d"
  # Shards of N/(4 x cores) URLs: img2dataset gives each process whole shards, and at its
  # default (10,000 per shard) a 2,000-URL list is one shard, so one process did all the work.
  shard=$(( (N + 4 * CORES - 1) / (4 * CORES) ))
  start=$(date +%s.%N)
  c=$(cpu_of "$CACHE/i2d/bin/img2dataset" --url_list "$tmp/urls.txt" --input_format txt --output_folder "$tmp/i2d" \
    --processes_count "$CORES" --thread_count 64 --number_sample_per_shard "$shard" \
    --image_size 640 --resize_mode border --output_format files \
    --timeout 10 --retries 0 --enable_wandb False --disallowed_header_directives '[]')
  end=$(date +%s.%N)
  printf 'img2dataset-cpu-ms\t-\t%s\n' "$(python3 -c "print(round(1000 * $c / $N, 3))")" | tee -a "$res"
  ok=$(python3 -c 'import glob,json,sys; print(sum(json.load(open(f))["successes"] for f in glob.glob(sys.argv[1]+"/*_stats.json")))' "$tmp/i2d")
  printf 'img2dataset\t-\t%s\n' "$(python3 -c "print(round($ok/($end-$start),1))")" | tee -a "$res"
  echo "img2dataset: $ok ok of $N"
done
# Memory: every adversarial input 32 times, all at once.
for i in $(seq 32); do ls "$CACHE/adversarial" | grep -v stamp | sed "s#^#http://127.0.0.1:$port/adv/#;s#\$#?r=$i#"; done > "$tmp/adv.txt"
echo "adversarial: $(wc -l < "$tmp/adv.txt") URLs (24 MP PNGs, 30 MB non-images) at concurrency 256:"
bench_argv "$BIN"; "${cmd[@]}" fetch "$tmp/adv.txt" -- --allow-networks 127.0.0.0/8 --concurrency 256 --per-host 256 | grep -E 'peak|fetched'
python3 - "$res" "$tmp/kinds.tsv" "$CORES" "${bins[@]}" <<'PY'
import statistics, sys
res, kinds, cores, bins = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
runs = {}
for line in open(res):
    metric, b, v = line.rstrip("\n").split("\t")
    if v:
        runs.setdefault((metric, b), []).append(float(v))
med = lambda m, b: statistics.median(runs[(m, b)]) if (m, b) in runs else float("nan")
files = {l.split("\t")[0]: int(l.split("\t")[1]) for l in open(kinds)}
total = sum(files.values())
new, old = bins[0], (bins[1] if len(bins) > 1 else None)
hdr = "| kind | files | CPU ms/image | img/s per core | share of decode CPU |" + (" old ms/image | old/new |" if old else "")
print("\n" + hdr)
print("|---" * (hdr.count("|") - 1) + "|")
cost = {k: files[k] * med(f"kind:{k}", new) for k in files}
for k in sorted(files):
    v = med(f"kind:{k}", new)
    row = f"| {k} | {files[k]} | {v:.2f} | {1000 / v:.1f} | {100 * cost[k] / sum(cost.values()):.0f}% |"
    if old:
        o = med(f"kind:{k}", old)
        row += f" {o:.2f} | {o / v:.2f}x |"
    print(row)
mix = sum(cost.values()) / total
line = f"| whole mix (weighted) | {total} | {mix:.2f} | {1000 / mix:.1f} | 100% |"
if old:
    omix = sum(files[k] * med(f"kind:{k}", old) for k in files) / total
    line += f" {omix:.2f} | {omix / mix:.2f}x |"
print(line)
i2d = med("img2dataset", "-")
print(f"\nmedians of {len(runs[('floor', new)])} rounds, {cores} cores (per core: divide by {cores}):")
for label, b in [("new", new)] + ([("old", old)] if old else []):
    a, f, r = med("floor", b), med("fetch", b), med("fetch-run", b)
    print(f"  {label}: (a) decode floor {a:.1f} img/s  (b) fetch tier {f:.1f} img/s  (b)/img2dataset "
          f"{f / i2d:.2f}x  [{b}]\n       first request to last answer {r:.1f} img/s: {100 * r / a:.0f}% of (a)")
print(f"  (c) img2dataset {i2d:.1f} img/s (runs: {runs[('img2dataset', '-')]})")
print("  (b), (c): images decoded / the whole process's wall time, start-up included")
if old:
    print(f"  new/old: decode floor {med('floor', new) / med('floor', old):.2f}x, "
          f"fetch tier {med('fetch', new) / med('fetch', old):.2f}x")
ic = med("img2dataset-cpu-ms", "-")
print(f"\nCPU per URL (user + sys; steadier than img/s on a shared machine; nginx not counted):")
for label, b in [("new", new)] + ([("old", old)] if old else []):
    fc, ac = med("fetch-cpu-ms", b), med("floor-cpu-ms", b)
    print(f"  {label}: decode floor {ac:.2f} ms/image ({1000 / ac:.1f} img/s per core), fetch tier "
          f"{fc:.2f} ms/URL ({1000 / fc:.1f} URLs/s per core), img2dataset/fetch {ic / fc:.2f}x")
print(f"  img2dataset {ic:.2f} ms/URL ({1000 / ic:.1f} URLs/s per core)")
if old:
    print(f"  old/new CPU: decode floor {med('floor-cpu-ms', old) / med('floor-cpu-ms', new):.2f}x, "
          f"fetch tier {med('fetch-cpu-ms', old) / med('fetch-cpu-ms', new):.2f}x")
print("goal: fetch tier >= 4x img2dataset, >= 80% of the floor")
PY
