#!/usr/bin/env bash
# Runs kappe's whole test suite on a fresh Debian machine: installs what the tests need when it is
# missing (redis-server and redis-cli, Chromium and ChromeDriver, Prometheus' promtool), then runs
# every Rust test. Under CI=true the tests that need those programs fail rather than skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v prometheus >/dev/null || need+=(prometheus)
if ((${#need[@]})); then
  echo "tests/run.sh: installing ${need[*]}"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo test --all-targets --locked "$@"
