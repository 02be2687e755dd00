#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run`): set-up (idempotent), format and
# lint checks, every unit and integration test (real guests booted through the real
# engine) under function-coverage measurement with an 85% gate, and the schemathesis
# conformance run of the API against Firecracker's spec.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test] %s\n' "$*" >&2; }

bash scripts/setup.sh

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -q -- -D warnings

if ! command -v cargo-llvm-cov >/dev/null; then
    log "installing cargo-llvm-cov"
    cargo install --locked -q cargo-llvm-cov
fi
export LLVM_COV=/usr/lib/llvm-19/bin/llvm-cov
export LLVM_PROFDATA=/usr/lib/llvm-19/bin/llvm-profdata
EC1_KERNEL="$(./target/release/ec1 kernel path)"
export EC1_KERNEL

log "tests under coverage (function coverage must stay at or above 85%)"
cargo llvm-cov --workspace --locked --no-report
cargo llvm-cov report --summary-only | tee target/coverage-summary.txt
cargo llvm-cov report --fail-under-functions 85 >/dev/null
fn_cov=$(awk '/^TOTAL/ {print $7}' target/coverage-summary.txt)

# Fuzzing: each parser that untrusted bytes reach, for a short bounded time per target
# (on a copy of the committed seed corpus, so the repository is not written).
FUZZ_SECONDS="${EC1_FUZZ_SECONDS:-20}"
if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain (cargo fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
    log "installing cargo-fuzz"
    cargo install --locked -q cargo-fuzz
fi
log "fuzzing each target for ${FUZZ_SECONDS} s"
fuzz_tmp=$(mktemp -d)
trap 'rm -rf "$fuzz_tmp"' EXIT
(cd fuzz && cargo +nightly fuzz build -O)
for t in proto_stream snapshot_file partition_table api_request; do
    cp -r "fuzz/corpus/$t" "$fuzz_tmp/$t"
    (cd fuzz && cargo +nightly fuzz run -O "$t" "$fuzz_tmp/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
        | grep -E '^(Done|stat::number_of_executed_runs)') || { log "fuzz target $t failed"; exit 1; }
done

log "schemathesis conformance run against a live ec1"
bash crates/api/tests/schemathesis.sh --binary ./target/release/ec1 --max-examples 25

echo "function coverage: ${fn_cov}"
