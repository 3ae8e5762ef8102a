#!/usr/bin/env bash
# Runs every grpcurl line of docs/operations.md against a live `facesweep up` and checks
# each prints its `# expect:` text.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FACESWEEP_CACHE:-$HOME/.cache/facesweep}"
export PATH="$CACHE/bin:$PATH"
BIN=target/debug/facesweep
# The span table ("What each span means") names exactly the spans the code opens (tests'
# own spans, after #[cfg(test)], aside).
python3 - <<'EOF'
import glob, re, sys
doc = open("docs/operations.md").read()
table = doc.split("### What each span means", 1)[1].split("\n#", 1)[0]
documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))
code = set()
for path in glob.glob("services/*/src/**/*.rs", recursive=True) + glob.glob("crates/*/src/**/*.rs", recursive=True) + glob.glob("cli/src/**/*.rs", recursive=True):
    src = open(path).read().split("#[cfg(test)]", 1)[0]
    code |= set(re.findall(r'(?:info|debug|warn|error|trace)_span!\(\s*(?:parent:\s*[^,]+,\s*)?"([a-z_]+)"', src))
if documented != code:
    sys.exit(f"docs/operations.md span table: not in the code {sorted(documented - code)}, "
             f"not in the table {sorted(code - documented)}")
print(f"docs/operations.md: the span table names the code's {len(code)} spans")
EOF
# `facesweep up --port B` takes B..B+3 for gRPC and B+10..B+13 for metrics: all must be free.
base=$(python3 -c 'import socket
def free(p):
    t=socket.socket()
    try: t.bind(("127.0.0.1",p)); return True
    except OSError: return False
    finally: t.close()
while True:
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close()
    if p < 60000 and all(free(p+i) for i in (0,1,2,3,10,11,12,13)):
        print(p); break')
data=$(mktemp -d /tmp/facesweep-ops.XXXXXX)
RUST_LOG=warn $BIN up --port "$base" --data-dir "$data" >"$data/up.log" 2>&1 &
up=$!
trap 'kill -INT $up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$data"' EXIT
printf 'http://127.0.0.1:9/a.jpg\nhttp://127.0.0.1:9/b.jpg\nhttp://127.0.0.1:9/c.jpg\n' > "$data/urls.txt"
for i in $(seq 240); do
  $BIN import --job ops --delegator "127.0.0.1:$base" "$data/urls.txt" >/dev/null 2>&1 && break
  if ! kill -0 $up 2>/dev/null; then echo "facesweep up exited:" >&2; cat "$data/up.log" >&2; exit 1; fi
  sleep 0.5
done
$BIN progress --job ops --wait --delegator "127.0.0.1:$base" >/dev/null
# The job `slow`: a server that accepts and never answers, so the job is still running
# (not done) while the operator lines below pause, resume, reweight and cancel it.
python3 -c 'import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
held = []
while True: held.append(s.accept())' >"$data/silent.port" 2>/dev/null </dev/null &
silent=$!
trap 'kill -INT $up 2>/dev/null; kill $silent 2>/dev/null; wait $up 2>/dev/null; rm -rf "$data"' EXIT
for i in $(seq 50); do [ -s "$data/silent.port" ] && break; sleep 0.1; done
silent_port=$(cat "$data/silent.port")
printf "http://127.0.0.1:$silent_port/a.jpg\nhttp://127.0.0.1:$silent_port/b.jpg\n" > "$data/slow.txt"
$BIN import --job slow --delegator "127.0.0.1:$base" "$data/slow.txt" >/dev/null
n=0
while IFS= read -r line; do
  cmd="${line%%# expect:*}"
  want="${line##*# expect: }"
  for k in 1 2 3 4; do cmd="${cmd//localhost:5005$k/127.0.0.1:$((base + k - 1))}"; done
  out=$(eval "$cmd" 2>&1 || true)
  if ! grep -qF -- "$want" <<<"$out"; then
    echo "FAILED: $cmd" >&2
    echo "expected to see: $want" >&2
    echo "$out" >&2
    exit 1
  fi
  n=$((n + 1))
done < <(grep -E '^grpcurl .*# expect: ' docs/operations.md)
echo "docs/operations.md: $n grpcurl commands checked against a live mesh"
