#!/usr/bin/env bash
# User-space instructions per request of one or more kappe binaries, counted by callgrind: a
# figure that repeats to within a fraction of a percent whatever else the machine does, where
# wall-clock comparisons on a shared machine vary by 10-20%. The stand-in ad server runs as in
# compare.sh; each binary runs under valgrind with one thread and the given flags, warms up for
# a second, and is counted only while wrk sends SECONDS of load (8 connections, the million
# random visitors). Startup, warm-up and shutdown are not counted.
# Usage: benches/load/instructions.sh [--seconds S] [--script LUA] BINARY... [-- kappe flags...]
#        (default flags: --cap 3/1d; default script: visitors.lua, a Host and a Cookie per request;
#        browser.lua sends a browser's fields)
# Environment: KEEP_CALLGRIND=PREFIX keeps each profile as PREFIX.BINARY for callgrind_annotate.
# Needs valgrind (callgrind_control), nginx, wrk and curl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=6
script=$here/visitors.lua
bins=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) secs=$2; shift 2 ;;
    --script) script=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) bins+=("$1"); shift ;;
  esac
done
[[ ${#bins[@]} -gt 0 ]] || { echo "usage: $0 [--seconds S] [--script LUA] BINARY... [-- kappe flags...]" >&2; exit 2; }
[[ -f $script ]] || { echo "no wrk script at $script" >&2; exit 2; }
[[ $# -gt 0 ]] || set -- --cap 3/1d
for tool in valgrind callgrind_control nginx wrk curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install valgrind nginx wrk curl)" >&2; exit 1; }
done
tmp=$(mktemp -d /tmp/kappe-instr.XXXXXX)
started=()
trap 'for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done; wait; rm -rf "$tmp"' EXIT
sed -e "s|@TMP@|$tmp|g" -e "s|@WORKERS@|1|g" "$here/conf/upstream-nginx.conf" >"$tmp/up.conf"
nginx -c "$tmp/up.conf" -g 'daemon off;' & started+=($!)
sleep 0.3
for bin in "${bins[@]}"; do
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/cg.out" \
    "$bin" --upstream http://127.0.0.1:18080 --listen 127.0.0.1:18089 \
    --admin-listen 127.0.0.1:19089 --threads 1 --log warn "$@" 2>"$tmp/valgrind.err" &
  k=$!
  for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18089/ad && break; sleep 0.2; done
  wrk -t1 -c8 -d1s -s "$script" http://127.0.0.1:18089/ad >/dev/null
  callgrind_control -i on "$k" >/dev/null 2>&1
  wrk -t1 -c8 -d"${secs}s" -s "$script" http://127.0.0.1:18089/ad >"$tmp/wrk"
  callgrind_control -i off "$k" >/dev/null 2>&1
  kill -INT "$k"; wait "$k" || true
  n=$(awk '/^ +[0-9]+ requests in/{print $1}' "$tmp/wrk")
  [[ -z ${KEEP_CALLGRIND:-} ]] || cp "$tmp/cg.out" "$KEEP_CALLGRIND.$(basename "$bin")"
  ir=$(awk '/^totals:/{print $2; exit}' "$tmp/cg.out")
  printf '%s: %d requests, %d instructions per request\n' "$bin" "$n" "$((ir / n))"
done
