#!/usr/bin/env bash
# Side-by-side load comparison on loopback: one stand-in ad server (nginx answering banners with
# X-Campaign-Id and X-Retargeting) reached directly, through nginx, through HAProxy (plain and
# with a per-visitor stick-table cap) and through kappe (no caps, caps on the memory store, caps
# on Redis). Targets are interleaved over several rounds so that machine drift hits all alike,
# each round in its own shuffled order (seeded by the round's number); throughput and
# CPU are medians over the rounds, latency is read from all the requests of the rounds together.
#
# Per series (1 worker each, then 2 workers each):
#   1. closed loop (wrk, 1,000,000 random visitors): maximum throughput, CPU of the proxy's
#      processes per 1000 requests, peak resident memory;
#   2. constant rate at half of the weakest maximum (paced wrk): p50/p99/p99.9, reported as
#      latency added over going direct, and CPU per 1000 requests at that rate.
# With one worker the proxy under test runs on CPU 1, the load generator, the ad server and
# Redis on CPU 0. With two workers nothing is pinned (the machine has two cores).
#
# Usage: benches/load/compare.sh [--rounds N] [--seconds S] [--series "1 2"] [--conns N]
#                                [--out DIR] [--only "target ..."]
# Environment: KAPPE_BIN (skip the build and use this binary), CARGO_TARGET_DIR.
# Writes DIR/table.md, DIR/results.json, DIR/chart.svg and DIR/raw/ (default benches/load/results).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rounds=3
secs=5
series="1 2"
conns=32
out=$here/results
only=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --series) series=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

for tool in nginx haproxy wrk redis-server taskset python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install nginx haproxy wrk redis-server util-linux python3)" >&2; exit 1; }
done
if [[ -z ${KAPPE_BIN:-} ]]; then
  (cd "$root" && cargo build --release --quiet)
  KAPPE_BIN=${CARGO_TARGET_DIR:-$root/target}/release/kappe
fi
[[ -x $KAPPE_BIN ]] || { echo "no kappe binary at $KAPPE_BIN" >&2; exit 1; }

tmp=$(mktemp -d /tmp/kappe-load.XXXXXX)
started=()
cleanup() {
  local p
  for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${started[@]}"; do wait "$p" 2>/dev/null || true; done
  started=()
}
trap 'cleanup; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

hz=$(getconf CLK_TCK)
# Sum of user+system ticks of a process and its children (nginx: master and workers).
group() { echo "$1"; ps -o pid= --ppid "$1" 2>/dev/null || true; }
ticks() {
  local sum=0 p f
  for p in $(group "$1"); do
    f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    f=${f##*) }
    set -- $f
    sum=$((sum + ${12} + ${13}))
  done
  echo $sum
}
# Peak resident memory of the group in KiB.
hwm() {
  local sum=0 p v
  for p in $(group "$1"); do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
    sum=$((sum + ${v:-0}))
  done
  echo $sum
}
# The targets in the order of round $1: a shuffle seeded by the round's number, so each round
# has its own order (which target runs first, which follows which) and a rerun repeats it.
round_order() {
  python3 -c 'import random, sys; t = sys.argv[2:]; random.Random("round " + sys.argv[1]).shuffle(t); print("\n".join(t))' "$1" "${targets[@]}"
}
wait_port() {
  local i
  for i in $(seq 100); do
    curl -fsS -o /dev/null -H 'Cookie: kappe_id=warm' "http://127.0.0.1:$1/ad" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 does not answer" >&2
  return 1
}

raw=$out/raw
mkdir -p "$out"
rm -rf "$raw"; mkdir -p "$raw"
{
  echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
  echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "cores=$(nproc)"
  echo "kernel=$(uname -r)"
  echo "kappe=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "kappe_bin=${KAPPE_BIN#"$root"/}"
  echo "nginx=$(nginx -v 2>&1 | sed 's/.*nginx\///')"
  echo "haproxy=$(haproxy -v | head -1 | awk '{print $3}')"
  echo "rounds=$rounds"
  echo "seconds=$secs"
  echo "conns=$conns"
  echo "command=benches/load/compare.sh --rounds $rounds --seconds $secs --series '$series' --conns $conns"
} >"$raw/machine"

for w in $series; do
  if [[ $w == 1 ]]; then gen=0 prx=1; else gen=0-$(( $(nproc) - 1 )) prx=$gen; fi
  for f in upstream-nginx.conf proxy-nginx.conf proxy-haproxy.cfg; do
    sed -e "s|@TMP@|$tmp|g" -e "s|@WORKERS@|$w|g" "$here/conf/$f" >"$tmp/$f"
  done
  taskset -c "$gen" nginx -c "$tmp/upstream-nginx.conf" -g 'daemon off;' & started+=($!); up=$!
  taskset -c "$gen" redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no \
    --logfile "$tmp/redis.log" & started+=($!); redis=$!
  taskset -c "$prx" nginx -c "$tmp/proxy-nginx.conf" -g 'daemon off;' & started+=($!); ngx=$!
  taskset -c "$prx" haproxy -db -f "$tmp/proxy-haproxy.cfg" 2>"$tmp/haproxy.err" & started+=($!); hap=$!
  kappe() { # name port admin-port args...
    local name=$1 port=$2 admin=$3; shift 3
    taskset -c "$prx" "$KAPPE_BIN" --upstream http://127.0.0.1:18080 --listen "127.0.0.1:$port" \
      --admin-listen "127.0.0.1:$admin" --threads "$w" --log warn "$@" >"$tmp/$name.log" 2>&1 &
    started+=($!)
  }
  kappe kappe 18085 19085; kpl=$!
  kappe kappe-cap 18084 19084 --cap 3/1d; kcap=$!
  sleep 0.3
  redis-cli -p 16379 flushall >/dev/null 2>&1 || true
  kappe kappe-cap-redis 18086 19086 --cap 3/1d --store redis://127.0.0.1:16379; kred=$!
  targets=("direct:18080:$up" "nginx:18081:$ngx" "haproxy:18082:$hap" "haproxy-cap:18083:$hap"
    "kappe:18085:$kpl" "kappe-cap:18084:$kcap" "kappe-cap-redis:18086:$kred")
  if [[ -n $only ]]; then
    sel=()
    for t in "${targets[@]}"; do [[ " direct $only " == *" ${t%%:*} "* ]] && sel+=("$t"); done
    targets=("${sel[@]}")
  fi
  for t in "${targets[@]}"; do
    IFS=: read -r name port pid <<<"$t"
    wait_port "$port"
    # Warm-up: connections, pools and the first visitors.
    taskset -c "$gen" wrk -t1 -c"$conns" -d1s -s "$here/visitors.lua" "http://127.0.0.1:$port/ad" >/dev/null 2>&1
  done
  echo "series $w: load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$raw/machine"
  echo "load.$w.start=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$raw/machine"

  # 1. closed loop, interleaved
  for r in $(seq "$rounds"); do
    for t in $(round_order "$r"); do
      IFS=: read -r name port pid <<<"$t"
      f=$raw/w$w.max.$name.$r
      c0=$(ticks "$pid"); r0=$(ticks "$redis")
      taskset -c "$gen" wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$here/visitors.lua" \
        "http://127.0.0.1:$port/ad" >"$f" 2>&1 || true
      c1=$(ticks "$pid"); r1=$(ticks "$redis")
      echo "CPU ticks=$((c1 - c0)) redis=$((r1 - r0)) hz=$hz" >>"$f"
      echo "w$w round $r $name: $(sed -n 's/^Requests\/sec: *//p' "$f") rps"
    done
  done
  for t in "${targets[@]}"; do
    IFS=: read -r name port pid <<<"$t"
    echo "$name=$(hwm "$pid")" >>"$raw/w$w.rss"
  done

  # 2. constant rate at half of the weakest median maximum
  rate=$(python3 - "$raw" "$w" "${targets[@]}" <<'PY'
import re, statistics, sys, glob
raw, w, targets = sys.argv[1], sys.argv[2], sys.argv[3:]
best = []
for t in targets:
    name = t.split(":")[0]
    v = [float(m.group(1)) for f in glob.glob(f"{raw}/w{w}.max.{name}.*")
         if (m := re.search(r"Requests/sec:\s+([\d.]+)", open(f).read()))]
    if v:
        best.append(statistics.median(v))
print(int(min(best) / 2))
PY
)
  per_conn=$(python3 -c "print($rate / $conns)")
  echo "rate.$w=$rate" >>"$raw/machine"
  echo "series $w: constant rate $rate req/s"
  for r in $(seq "$rounds"); do
    for t in $(round_order "$r"); do
      IFS=: read -r name port pid <<<"$t"
      f=$raw/w$w.lat.$name.$r
      c0=$(ticks "$pid"); r0=$(ticks "$redis")
      RATE_PER_CONN=$per_conn taskset -c "$gen" wrk -t1 -c"$conns" -d"${secs}s" -s "$here/paced.lua" \
        "http://127.0.0.1:$port/ad" >"$f" 2>&1 || true
      c1=$(ticks "$pid"); r1=$(ticks "$redis")
      echo "CPU ticks=$((c1 - c0)) redis=$((r1 - r0)) hz=$hz" >>"$f"
    done
  done
  echo "load.$w.end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$raw/machine"
  for n in kappe kappe-cap kappe-cap-redis; do cp "$tmp/$n.log" "$raw/w$w.$n.log"; done
  cleanup
  sleep 0.5
done

python3 "$here/report.py" "$raw" "$out"
