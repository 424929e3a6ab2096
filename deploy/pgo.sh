#!/usr/bin/env bash
# Builds kappe with profile-guided optimisation (PGO): an instrumented build serves a training load
# on loopback, and a second build is laid out by what that load ran. The training is the load
# comparison's stand-in ad server (nginx answering retargeting banners) with the visitors of
# benches/load/mixed.lua, through kappe with caps on the memory store (one and two threads), without
# caps, and with caps on Redis when redis-server is installed.
#
# Against `cargo build --release` of the same commit, the PGO binary ran 18% fewer user-space
# instructions per capped request (13% for a browser's request) and spent 8% less CPU per request
# (benches/load/instructions.sh, benches/load/ab.sh; README, Performance). It behaves the same: PGO
# changes which code is inlined and where it lies, not what it does.
#
# Usage: deploy/pgo.sh [--out PATH] [--seconds S]   (default: target/pgo/kappe, 6 s of training)
# Needs cargo, curl, nginx, wrk and the llvm-profdata of rustc's LLVM version (Debian's llvm-NN);
# installs the missing ones with apt-get where it can. Uses ports 18080, 18089, 19089 and 16379.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
here=$root/benches/load
out=$root/target/pgo/kappe
secs=6
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "deploy/pgo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $secs =~ ^[1-9][0-9]*$ ]] || { echo "deploy/pgo.sh: --seconds must be a whole number above 0, not $secs" >&2; exit 2; }

# llvm-profdata must read what rustc's LLVM writes: the same major version.
major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\)\..*/\1/p')
[[ -n $major ]] || { echo "deploy/pgo.sh: cannot tell rustc's LLVM version from rustc -vV" >&2; exit 1; }
find_profdata() {
  local c
  for c in "$(command -v "llvm-profdata-$major" || true)" "/usr/lib/llvm-$major/bin/llvm-profdata" \
    "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata; do
    [[ -n $c && -x $c ]] && { echo "$c"; return; }
  done
}
need=()
[[ -n $(find_profdata) ]] || need+=("llvm-$major")
for tool in curl nginx wrk; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  echo "deploy/pgo.sh: installing ${need[*]}"
  # Without starting Debian's nginx service on :80; the training starts its own.
  "$root/deploy/scripts/apt-install" "${need[@]}"
fi
profdata=$(find_profdata)
[[ -n $profdata ]] || { echo "deploy/pgo.sh: no llvm-profdata for LLVM $major after installing llvm-$major" >&2; exit 1; }

pgo=$root/target/pgo
raw=$pgo/raw
# Each build has its own target directory: the flags differ, so they would rebuild each other's crates.
echo "== instrumented build"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" \
  cargo build --release --locked --bin kappe --target-dir "$pgo/generate" --manifest-path "$root/Cargo.toml"
# The build scripts of the dependencies were instrumented too; only kappe's training counts.
rm -rf "$raw"

echo "== training"
tmp=$(mktemp -d /tmp/kappe-pgo.XXXXXX)
started=()
cleanup() {
  local p
  for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
  wait
  rm -rf "$tmp"
}
trap cleanup EXIT
sed -e "s|@TMP@|$tmp|g" -e "s|@WORKERS@|1|g" "$here/conf/upstream-nginx.conf" >"$tmp/upstream.conf"
nginx -c "$tmp/upstream.conf" -g 'daemon off;' & started+=($!)
redis=
if command -v redis-server >/dev/null; then
  redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no --logfile "$tmp/redis.log" &
  started+=($!); redis=redis://127.0.0.1:16379
fi
train() { # seconds script kappe-flags...
  local s=$1 script=$2 k; shift 2
  "$pgo/generate/release/kappe" --upstream http://127.0.0.1:18080 --listen 127.0.0.1:18089 \
    --admin-listen 127.0.0.1:19089 --log warn "$@" & k=$!
  started+=("$k")
  for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18089/ad && break; sleep 0.1; done
  kill -0 "$k" 2>/dev/null || { echo "deploy/pgo.sh: kappe $* did not start" >&2; exit 1; }
  printf '%s: ' "$*"
  wrk -t1 -c32 -d"${s}s" -s "$here/$script" http://127.0.0.1:18089/ad | awk '/requests in/{print $1, "requests"}'
  curl -sf -o /dev/null http://127.0.0.1:19089/metrics
  curl -sf -o /dev/null http://127.0.0.1:19089/healthz
  # The profile is written as kappe exits.
  kill -INT "$k"; wait "$k"
}
half=$(( (secs + 1) / 2 ))
train "$secs" mixed.lua --threads 1 --cap 3/1d
train "$half" mixed.lua --threads 2 --cap 3/1d
train "$half" visitors.lua --threads 1
if [[ -n $redis ]]; then
  train "$half" mixed.lua --threads 1 --cap 3/1d --store "$redis"
else
  echo "no redis-server: the Redis store is not trained"
fi
compgen -G "$raw/*.profraw" >/dev/null || { echo "deploy/pgo.sh: the training wrote no profile to $raw" >&2; exit 1; }
"$profdata" merge -o "$pgo/kappe.profdata" "$raw"

echo "== optimised build"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$pgo/kappe.profdata" \
  cargo build --release --locked --bin kappe --target-dir "$pgo/use" --manifest-path "$root/Cargo.toml"
install -D -m 0755 "$pgo/use/release/kappe" "$out"
echo "deploy/pgo.sh: $out"
