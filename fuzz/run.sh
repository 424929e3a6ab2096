#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 20) and exits non-zero on the first crash.
#
#   fuzz/run.sh 20
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler (libfuzzer-sys builds
# libFuzzer). cargo-fuzz passes nightly-only flags to rustc; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them, so no nightly install is needed. The sanitizer is off: the crate forbids
# unsafe code, so AddressSanitizer would find nothing the panic checks do not, and it doubles
# build and run time. Inputs found while running go to a scratch directory; the committed seed
# corpus under fuzz/corpus/<target>/ stays small and reviewable. A crashing input is written to
# fuzz/artifacts/<target>/.
set -euo pipefail

secs="${1:-20}"
cd "$(dirname "$0")"

export RUSTC_BOOTSTRAP=1
targets=(tcf gpp usp cookies policy headers snapshot head)

cargo fuzz build --sanitizer none
for t in "${targets[@]}"; do
    scratch="$(mktemp -d)"
    echo "== fuzz target $t for ${secs}s"
    if ! cargo fuzz run --sanitizer none "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=20000 -rss_limit_mb=1024 -timeout=5; then
        echo "fuzz target $t failed; crashing input under fuzz/artifacts/$t/" >&2
        rm -rf "$scratch"
        exit 1
    fi
    rm -rf "$scratch"
done
echo "all fuzz targets ran ${secs}s without a crash"
