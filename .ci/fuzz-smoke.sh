#!/usr/bin/env bash
# Fuzz smoke test: builds every target in fuzz/ and runs each for a few
# seconds (FUZZ_SECONDS, default 5), starting from its checked-in
# regression inputs (and seeds/<target>.py's output, if any). Exits
# non-zero if any target crashes (panic, abort, timeout or out of memory);
# the crashing input is left in fuzz/artifacts/<target>/.
#
# Stable toolchain: cargo-fuzz needs nightly-only rustc flags, which
# RUSTC_BOOTSTRAP=1 unlocks. Built without a sanitizer (--sanitizer none):
# the code is `forbid(unsafe_code)`, so AddressSanitizer would find little
# that a panic does not show, and it roughly doubles build and run time.
# Coverage-guided fuzzing (libFuzzer) and debug assertions stay on.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-5}"
# A smoke run of seconds gains little from full optimisation, and the build
# is the slow part: opt-level 1 builds in 8 minutes instead of 11 on 2
# cores. Long runs: CARGO_PROFILE_RELEASE_OPT_LEVEL=3 (cargo-fuzz's default).
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "== cargo fuzz build"
cargo fuzz build --sanitizer none

corpus_root="$(mktemp -d)"
trap 'rm -rf "$corpus_root"' EXIT

failed=()
for target in $(cargo fuzz list); do
    echo "== fuzz $target (${seconds}s)"
    mkdir -p "$corpus_root/$target"
    seeds=()
    [ -d "regressions/$target" ] && seeds+=("regressions/$target")
    if [ -f "seeds/$target.py" ] && command -v python3 >/dev/null; then
        python3 "seeds/$target.py" "$corpus_root/$target" >/dev/null
    fi
    if ! cargo fuzz run --sanitizer none "$target" "$corpus_root/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        >"$corpus_root/$target.log" 2>&1; then
        tail -n 60 "$corpus_root/$target.log"
        failed+=("$target")
    else
        grep -E "^stat::number_of_executed_units|^Done" "$corpus_root/$target.log" || true
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz smoke: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "fuzz smoke: every target ran ${seconds}s without a crash"
