#!/usr/bin/env bash
# A/B of two kappe binaries under the same load: the stand-in ad server and wrk on CPU 0, the
# binary under test on CPU 1 with one thread, runs alternating A B A B ... so that drift from
# other work on the machine hits both alike. Prints, per binary, the median req/s and the median
# CPU seconds per 1000 requests (user, system, total) of the kappe process.
# Usage: benches/load/ab.sh BIN_A BIN_B [RUNS] [SECONDS] [kappe flags...]   (default: 6 4 --cap 3/1d)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
a=$1 b=$2 runs=${3:-6} secs=${4:-4}
shift $(( $# < 4 ? $# : 4 ))
[[ $# -gt 0 ]] || set -- --cap 3/1d
tmp=$(mktemp -d /tmp/kappe-ab.XXXXXX)
started=()
trap 'for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done; wait; rm -rf "$tmp"' EXIT
sed -e "s|@TMP@|$tmp|g" -e "s|@WORKERS@|1|g" "$here/conf/upstream-nginx.conf" >"$tmp/up.conf"
taskset -c 0 nginx -c "$tmp/up.conf" -g 'daemon off;' & started+=($!)
taskset -c 1 "$a" --upstream http://127.0.0.1:18080 --listen 127.0.0.1:18091 --admin-listen 127.0.0.1:19091 \
  --threads 1 --log warn "$@" & started+=($!); pa=$!
taskset -c 1 "$b" --upstream http://127.0.0.1:18080 --listen 127.0.0.1:18092 --admin-listen 127.0.0.1:19092 \
  --threads 1 --log warn "$@" & started+=($!); pb=$!
sleep 1
stat() { local f; f=$(cat "/proc/$1/stat"); f=${f##*) }; set -- $f; echo "${12} ${13}"; }
for port in 18091 18092; do
  taskset -c 0 wrk -t1 -c32 -d1s -s "$here/visitors.lua" "http://127.0.0.1:$port/ad" >/dev/null
done
for r in $(seq "$runs"); do
  for x in a:18091:$pa b:18092:$pb; do
    IFS=: read -r name port pid <<<"$x"
    read -r u0 s0 < <(stat "$pid")
    n=$(taskset -c 0 wrk -t1 -c32 -d"${secs}s" -s "$here/visitors.lua" "http://127.0.0.1:$port/ad" \
      | awk '/requests in/ {print $1}')
    read -r u1 s1 < <(stat "$pid")
    echo "$name $n $((u1 - u0)) $((s1 - s0))" >>"$tmp/runs"
  done
done
python3 - "$tmp/runs" "$secs" "$(getconf CLK_TCK)" "$a" "$b" <<'PY'
import sys, statistics as st
runs, secs, hz = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
names = {"a": sys.argv[4], "b": sys.argv[5]}
rows = {}
for line in open(runs):
    k, n, u, s = line.split(); n, u, s = int(n), int(u) / hz, int(s) / hz
    rows.setdefault(k, []).append((n / secs, u / n * 1000, s / n * 1000, (u + s) / n * 1000))
for k, v in rows.items():
    m = [st.median(x[i] for x in v) for i in range(4)]
    print(f"{k}: {m[0]:8.0f} req/s  CPU s/1000 req: user {m[1]:.4f} sys {m[2]:.4f} total {m[3]:.4f}  ({len(v)} runs)  {names[k]}")
PY
