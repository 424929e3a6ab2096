#!/usr/bin/env bash
# Profiles kappe under the same load as compare.sh: the stand-in ad server on CPU 0, kappe on
# CPU 1 with one thread and the given flags, wrk for SECONDS, `perf record -g` on kappe meanwhile.
# Usage: benches/load/profile.sh [SECONDS] [kappe flags...]   (default: 10 --cap 3/1d)
# Environment: KAPPE_BIN, PERF_FREQ (default 2000), PERF_CALLGRAPH (default -g). Writes perf.data and a flat report (perf-top.txt) to OUT (default /tmp).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-10}; shift || true
[[ $# -gt 0 ]] || set -- --cap 3/1d
out=${OUT:-/tmp}
if [[ -z ${KAPPE_BIN:-} ]]; then
  (cd "$root" && cargo build --release --quiet)
  KAPPE_BIN=${CARGO_TARGET_DIR:-$root/target}/release/kappe
fi
tmp=$(mktemp -d /tmp/kappe-prof.XXXXXX)
started=()
trap 'for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done; wait; rm -rf "$tmp"' EXIT
sed -e "s|@TMP@|$tmp|g" -e "s|@WORKERS@|1|g" "$here/conf/upstream-nginx.conf" >"$tmp/up.conf"
taskset -c 0 nginx -c "$tmp/up.conf" -g 'daemon off;' & started+=($!)
taskset -c 1 "$KAPPE_BIN" --upstream http://127.0.0.1:18080 --listen 127.0.0.1:18089 \
  --admin-listen 127.0.0.1:19089 --threads 1 --log warn "$@" & started+=($!); kappe=$!
sleep 1
taskset -c 0 wrk -t1 -c32 -d"$((secs + 2))s" -s "$here/visitors.lua" http://127.0.0.1:18089/ad >"$tmp/wrk" &
started+=($!)
sleep 1
perf record -F ${PERF_FREQ:-2000} ${PERF_CALLGRAPH:--g} -o "$out/perf.data" -p "$kappe" -- sleep "$secs" 2>/dev/null
wait "${started[-1]}" || true
grep -E "Requests/sec" "$tmp/wrk"
perf report -i "$out/perf.data" --no-children --percent-limit 0.7 --stdio 2>/dev/null \
  | grep -E '^ +[0-9]' >"$out/perf-top.txt" || true
head -40 "$out/perf-top.txt"
