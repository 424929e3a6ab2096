#!/usr/bin/env bash
# Soak test: mixed load through a release kappe for SOAK_SECS (default 600) in front of an
# upstream that sometimes fails (closes without answering, answers too late, answers 503), with
# SIGHUP reloads meanwhile. Every SOAK_SAMPLE seconds it samples kappe's resident memory, open
# files and error counters. It fails on growth of memory or open files after warm-up, or on any
# error that the injected faults do not explain: socket errors seen by the load generator, 4xx
# answers, more 5xx answers than injected faults, refused reloads, a kappe that died or that
# exits non-zero on SIGTERM, or a state file it did not write.
#
#   benches/soak/soak.sh                 # 600 s
#   SOAK_SECS=60 benches/soak/soak.sh    # a short run
#   SOAK_RESULTS=benches/soak/RESULTS.md benches/soak/soak.sh   # also write the summary there
#
# SOAK_KEEP=1 keeps the scratch directory (logs, samples); SOAK_LOG sets kappe's --log.
# Needs wrk, python3 and curl; builds kappe in release mode unless KAPPE_BIN names a binary.
set -euo pipefail

secs="${SOAK_SECS:-600}"
sample="${SOAK_SAMPLE:-5}"
hup_every="${SOAK_HUP_EVERY:-15}"
conns="${SOAK_CONNECTIONS:-32}"
max_visitors="${SOAK_MAX_VISITORS:-20000}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
for prog in wrk python3 curl; do
    command -v "$prog" >/dev/null || { echo "soak: $prog is required (apt-get install $prog)" >&2; exit 2; }
done
if [[ -z "${KAPPE_BIN:-}" ]]; then
    (cd "$root" && cargo build --release --quiet)
    KAPPE_BIN="${CARGO_TARGET_DIR:-$root/target}/release/kappe"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -n "${SOAK_KEEP:-}" ]]; then echo "soak: files kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port="$(free_port)"; kappe_port="$(free_port)"; admin_port="$(free_port)"

# The upstream: an ad server that answers a banner of campaign ?c= marked as retargeting, and
# injects faults at fixed rates. It counts what it injected so the check can tell expected 5xx
# answers from unexpected ones.
cat >"$work/upstream.py" <<'PY'
import http.server, random, sys, threading, time
lock = threading.Lock()
stats = {"requests": 0, "faults": 0}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/_stats":
            with lock:
                body = "%d %d\n" % (stats["requests"], stats["faults"])
            return self.answer(200, body.encode(), {})
        r = random.random()
        with lock:
            stats["requests"] += 1
            if r < 0.04:
                stats["faults"] += 1
        if r < 0.02:      # close without answering: kappe says 502
            self.close_connection = True
            return
        if r < 0.03:      # too late for --upstream-timeout: kappe says 504
            time.sleep(3)
            return self.answer(200, b"late", {})
        if r < 0.04:      # the ad server itself fails: passed through
            return self.answer(503, b"busy", {})
        c = "rt-1"
        if "c=" in self.path:
            c = self.path.split("c=")[1].split("&")[0]
        self.answer(200, b"<a>banner %s</a>" % c.encode(),
                    {"X-Campaign-Id": c, "X-Retargeting": "1"})
    def answer(self, status, body, headers):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer.daemon_threads = True
# A deep accept queue: refused or dropped connects would be faults nobody injected.
http.server.ThreadingHTTPServer.request_queue_size = 1024
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$work/upstream.py" "$up_port" 2>"$work/upstream.log" & pids+=($!)
# Requests before the upstream listens would be refused: faults nobody injected.
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$up_port/_stats" >/dev/null && break
    sleep 0.1
done

# Random visitor ids (a flood of new ones and a pool of returning ones), several campaigns.
cat >"$work/mix.lua" <<'LUA'
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  local r = math.random()
  local id
  if r < 0.5 then id = string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  else id = "returning" .. math.random(1, 2000) end
  local path = "/ad?c=rt-" .. math.random(1, 20)
  if math.random() < 0.1 then path = "/page" end
  return wrk.format("GET", path, {["Cookie"] = "kappe_id=" .. id})
end
LUA

cat >"$work/a.toml" <<'TOML'
cap = ["3/1h"]
visitor-cap = ["10/1d"]
TOML
cat >"$work/b.toml" <<'TOML'
cap = ["5/1h"]
visitor-cap = ["12/1d"]
TOML
cp "$work/a.toml" "$work/kappe.toml"

"$KAPPE_BIN" --upstream "http://127.0.0.1:$up_port" --listen "127.0.0.1:$kappe_port" \
    --admin-listen "127.0.0.1:$admin_port" --config "$work/kappe.toml" \
    --state-file "$work/state" --snapshot-interval 10s --max-visitors "$max_visitors" \
    --upstream-timeout 2s --shutdown-grace 10s --log "${SOAK_LOG:-warn}" 2>"$work/kappe.log" &
kpid=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$admin_port/healthz" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$admin_port/healthz" >/dev/null || { echo "soak: kappe did not start" >&2; cat "$work/kappe.log" >&2; exit 1; }

metric() { curl -sf "http://127.0.0.1:$admin_port/metrics" | awk -v s="$1" '$1==s {print $2; f=1} END {if (!f) print 0}'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$kpid/status"; }
fds() { ls "/proc/$kpid/fd" | wc -l; }

wrk -t2 -c"$conns" -d"${secs}s" --timeout 5s -s "$work/mix.lua" "http://127.0.0.1:$kappe_port" >"$work/wrk.out" 2>&1 &
wpid=$!
pids+=("$wpid")

echo "t_s rss_kib fds visitors 5xx reloads_ok reloads_error" | tee "$work/samples"
start=$(date +%s); hups=0; last_hup=$start; flip=0
while kill -0 "$wpid" 2>/dev/null; do
    sleep "$sample"
    now=$(date +%s)
    kill -0 "$kpid" 2>/dev/null || { echo "soak: kappe died" >&2; cat "$work/kappe.log" >&2; exit 1; }
    if (( now - last_hup >= hup_every )); then
        flip=$((1 - flip)); if (( flip )); then cp "$work/b.toml" "$work/kappe.toml"; else cp "$work/a.toml" "$work/kappe.toml"; fi
        kill -HUP "$kpid"; hups=$((hups + 1)); last_hup=$now
    fi
    echo "$((now - start)) $(rss_kib) $(fds) $(metric kappe_store_visitors) $(metric 'kappe_http_requests_total{code="5xx"}') $(metric 'kappe_config_reloads_total{result="ok"}') $(metric 'kappe_config_reloads_total{result="error"}')" | tee -a "$work/samples"
done
wait "$wpid" || true
sleep 1

read -r up_requests up_faults < <(curl -sf "http://127.0.0.1:$up_port/_stats")
c2=$(metric 'kappe_http_requests_total{code="2xx"}'); c4=$(metric 'kappe_http_requests_total{code="4xx"}')
c5=$(metric 'kappe_http_requests_total{code="5xx"}')
rok=$(metric 'kappe_config_reloads_total{result="ok"}'); rerr=$(metric 'kappe_config_reloads_total{result="error"}')
visitors=$(metric kappe_store_visitors)
ue_connect=$(metric 'kappe_upstream_errors_total{kind="connect"}'); ue_timeout=$(metric 'kappe_upstream_errors_total{kind="timeout"}')
ue_broken=$(metric 'kappe_upstream_errors_total{kind="broken"}')
sock_errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk.out"); sock_errors=${sock_errors:-0}
rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
# Growth: after a warm-up of a fifth of the run, the last fifth may not be above the warm-up
# level by more than 25 % + 16 MiB (memory) or 64 descriptors.
read -r warm_rss warm_fd end_rss end_fd peak_rss < <(awk 'NR>1 {t[NR]=$1; r[NR]=$2; f[NR]=$3; n=NR}
    END { w=int(n/5)+1; if (w<2) w=2; e=n-int(n/5); if (e<=w) e=n;
          mr=0; mf=0; pr=0; for (i=2;i<=n;i++) if (r[i]>pr) pr=r[i];
          for (i=e;i<=n;i++) { if (r[i]>mr) mr=r[i]; if (f[i]>mf) mf=f[i] }
          print r[w], f[w], mr, mf, pr }' "$work/samples")

kill -TERM "$kpid"; kstatus=0; wait "$kpid" || kstatus=$?
state_bytes=$(stat -c %s "$work/state" 2>/dev/null || echo 0)

failures=()
(( sock_errors == 0 )) || failures+=("$sock_errors socket errors at the load generator")
[[ "$c4" == 0 ]] || failures+=("$c4 unexpected 4xx answers")
awk -v a="$c5" -v b="$up_faults" 'BEGIN {exit !(a <= b)}' || failures+=("$c5 5xx answers but only $up_faults injected faults")
[[ "$rerr" == 0 ]] || failures+=("$rerr refused reloads")
awk -v a="$rok" -v b="$hups" 'BEGIN {exit !(a == b)}' || failures+=("$rok reloads counted for $hups SIGHUPs")
(( end_rss <= warm_rss * 125 / 100 + 16384 )) || failures+=("resident memory grew from $warm_rss KiB to $end_rss KiB")
(( end_fd <= warm_fd + 64 )) || failures+=("open files grew from $warm_fd to $end_fd")
(( kstatus == 0 )) || failures+=("kappe exited with $kstatus on SIGTERM")
(( state_bytes > 0 )) || failures+=("no state file written on SIGTERM")

summary=$(cat <<TXT
soak: ${secs}s, ${conns} connections, $(date -u +%Y-%m-%dT%H:%MZ), kappe $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores
load: ${rps} requests/s through kappe; answers 2xx=${c2} 4xx=${c4} 5xx=${c5}; upstream saw ${up_requests} requests, injected ${up_faults} faults
upstream errors seen by kappe: connect=${ue_connect} timeout=${ue_timeout} broken=${ue_broken}
reloads: ${hups} SIGHUPs, ${rok} ok, ${rerr} refused; socket errors at the load generator: ${sock_errors}
memory: resident ${warm_rss} KiB after warm-up, ${end_rss} KiB at the end (peak ${peak_rss} KiB), ${visitors} visitors stored (bound ${max_visitors})
open files: ${warm_fd} after warm-up, ${end_fd} at the end
shutdown: SIGTERM exit status ${kstatus}, state file ${state_bytes} bytes
TXT
)
if (( ${#failures[@]} )); then
    summary+=$'\n'"result: FAIL"; for f in "${failures[@]}"; do summary+=$'\n'"  - $f"; done
else
    summary+=$'\n'"result: PASS"
fi
echo "$summary"
if [[ -n "${SOAK_RESULTS:-}" ]]; then
    {
        echo "# Soak result"
        echo
        echo "Latest run of \`benches/soak/soak.sh\` (SOAK_SECS=${secs}). Samples every ${sample}s:"
        echo
        echo '```text'
        echo "$summary"
        echo '```'
        echo
        echo '```text'
        cat "$work/samples"
        echo '```'
    } >"$SOAK_RESULTS"
fi
(( ${#failures[@]} == 0 ))
