#!/usr/bin/env bash
# End-to-end check of kappe's metrics through a real Prometheus server:
#   deploy/prometheus-e2e.sh KAPPE_BIN
# starts `KAPPE_BIN demo` (kappe in front of its built-in sample ad server) on
# free loopback ports, asks it for a few retargeting ads with a cookie jar so
# the visitor cookie it issues is sent back, starts `prometheus` scraping the
# admin port every second, and polls Prometheus' HTTP API until
# kappe_impressions_total is above zero (at most E2E_TIMEOUT seconds, default
# 30). It also checks that every kappe_* family kappe exposes is one the
# dashboard and rules know (deploy/scripts/check_metrics.py).
#
# deploy/scripts/fake-kappe stands in for KAPPE_BIN to test the Prometheus half
# without a kappe build. Needs curl, python3 and prometheus (Debian's package).
# Without prometheus the check fails when CI=true and is skipped otherwise.
# Exit status: 0 passed (or skipped locally), 1 failed, 2 usage.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 KAPPE_BIN" >&2
    exit 2
fi
kappe_bin=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
timeout_s=${E2E_TIMEOUT:-30}

if [[ ! -x $kappe_bin ]]; then
    echo "prometheus-e2e: FAIL: $kappe_bin is not an executable" >&2
    exit 1
fi
for tool in prometheus curl python3; do
    if ! command -v "$tool" >/dev/null; then
        if [[ ${CI:-} == true ]]; then
            echo "prometheus-e2e: FAIL: $tool is not installed (CI=true)" >&2
            exit 1
        fi
        echo "prometheus-e2e: skipped: $tool is not installed (apt-get install -y prometheus curl)"
        exit 0
    fi
done

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "prometheus-e2e: FAIL: $*" >&2
    for log in "$work"/*.log; do
        [[ -s $log ]] || continue
        echo "--- $(basename "$log") (last 20 lines)" >&2
        tail -n 20 "$log" >&2
    done
    exit 1
}

# Three distinct free loopback ports. The kernel hands them out and they are
# released at once: a small race with other programs, acceptable for a test.
read -r p_proxy p_admin p_prom < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# Waits until URL answers 2xx, or fails after SECONDS; PID must stay alive.
wait_http() {
    local url=$1 seconds=$2 pid=$3 what=$4 deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || fail "$what exited before answering $url"
        ((SECONDS < deadline)) || fail "$what did not answer $url within ${seconds}s"
        sleep 0.2
    done
}

"$kappe_bin" demo --listen "127.0.0.1:$p_proxy" --admin-listen "127.0.0.1:$p_admin" \
    >"$work/kappe.log" 2>&1 &
pids+=($!)
kappe_pid=$!
wait_http "http://127.0.0.1:$p_admin/healthz" 15 "$kappe_pid" kappe

# The first answer sets the visitor cookie; the jar sends it back after that,
# so these are several ads for one visitor.
codes=()
for _ in 1 2 3 4 5; do
    codes+=("$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
        -c "$work/cookies" -b "$work/cookies" "http://127.0.0.1:$p_proxy/ad?slot=top")") \
        || fail "request to kappe's demo failed"
done
echo "prometheus-e2e: 5 requests to /ad?slot=top answered ${codes[*]}"

cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: kappe
    static_configs:
      - targets: ["127.0.0.1:$p_admin"]
EOF
promtool check config "$work/prometheus.yml" >/dev/null 2>&1 || fail "generated prometheus.yml is invalid"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$p_prom" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
prom_pid=$!
wait_http "http://127.0.0.1:$p_prom/-/ready" 20 "$prom_pid" prometheus

# Poll the query API until a sample above zero comes back.
deadline=$((SECONDS + timeout_s))
value=""
while :; do
    kill -0 "$prom_pid" 2>/dev/null || fail "prometheus exited"
    kill -0 "$kappe_pid" 2>/dev/null || fail "kappe exited"
    answer=$(curl -fsS --max-time 2 "http://127.0.0.1:$p_prom/api/v1/query?query=kappe_impressions_total" 2>/dev/null || true)
    value=$(python3 -c '
import json, sys
try:
    result = json.loads(sys.argv[1])["data"]["result"]
except (ValueError, KeyError, TypeError):
    sys.exit(0)
print(max((float(r["value"][1]) for r in result), default=""))
' "$answer")
    if [[ -n $value ]] && python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)' "$value"; then
        break
    fi
    ((SECONDS < deadline)) || fail "kappe_impressions_total not above 0 in Prometheus after ${timeout_s}s (last: '${value:-no sample}')"
    sleep 0.5
done
echo "prometheus-e2e: Prometheus reads kappe_impressions_total = $value"

# Every kappe_* family on the admin port must be one the dashboard and the
# alerting rules are checked against.
curl -fsS --max-time 2 "http://127.0.0.1:$p_admin/metrics" >"$work/metrics.txt" || fail "cannot read /metrics"
python3 - "$work/metrics.txt" "$here/scripts/check_metrics.py" <<'EOF' || fail "kappe exposes metric families the dashboard and rules do not know"
import importlib.util, re, sys
spec = importlib.util.spec_from_file_location("check_metrics", sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
exposed = set(re.findall(r"^# TYPE (kappe_\w+) ", open(sys.argv[1]).read(), re.M))
unknown = sorted(exposed - set(module.METRICS))
if unknown:
    print("unknown families:", ", ".join(unknown), file=sys.stderr)
    sys.exit(1)
print(f"prometheus-e2e: {len(exposed)} kappe_* families exposed, all known")
EOF
echo "prometheus-e2e: ok"
