#!/usr/bin/env bash
# Runs kappe's whole test suite on a fresh Debian machine. Installs what the tests need when it is
# missing (redis-server and redis-cli, Chromium and ChromeDriver, Prometheus and promtool, a C++
# compiler for libFuzzer, cargo-fuzz), then runs, in order:
#   1. deploy/check.sh    the operator files, with the real tools, against the kappe binary
#   2. fuzz/run.sh        every fuzz target for FUZZ_SECONDS (default 20) seconds
#   3. cargo test         every unit, integration, doc and bench-as-test target
# Under CI=true the tests that need Redis, Chromium or Prometheus fail rather than skip.
# Extra arguments go to cargo test (e.g. tests/run.sh -- caps).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v g++ >/dev/null || need+=(g++)
command -v python3 >/dev/null || need+=(python3 python3-venv)
if ((${#need[@]})); then
  echo "tests/run.sh: installing ${need[*]}"
  # Without starting the services the packages bring (prometheus would take :9090).
  deploy/scripts/apt-install "${need[@]}"
fi
# Debian starts redis-server as a service; the tests start their own on free ports.
command -v systemctl >/dev/null && systemctl is-active -q redis-server 2>/dev/null && systemctl stop redis-server || true

echo "== build"
cargo build --all-targets --locked

echo "== deploy checks"
KAPPE_BIN=target/debug/kappe deploy/check.sh

echo "== fuzzing"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
fuzz/run.sh "${FUZZ_SECONDS:-20}"

echo "== cargo test"
cargo test --all-targets --locked "$@"
