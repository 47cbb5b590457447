#!/usr/bin/env bash
# Lints (clippy, warnings as errors) the CLI's client library (crates/client) for the browser
# (wasm32-unknown-unknown), so its platform seams (socket, clock, files,
# SQLite) keep building there while the web client is wired to it
# (docs/WEB_CLIENT.md). rusqlite compiles SQLite's C to wasm with
# sqlite-wasm-rs, which needs clang 19 (Debian's default clang 14 fails on
# its C23 shim); this script installs clang-19 and llvm-19 with apt when
# they are missing.
#
#   scripts/check-wasm-client.sh
#
# Uses the default target directory, so the host's build scripts and proc
# macros from a native `cargo clippy` are reused (1 min instead of 5.5 in
# CI, where it runs right after the workspace's clippy).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v clang-19 >/dev/null || ! command -v llvm-ar-19 >/dev/null; then
    echo "check-wasm-client.sh: installing clang-19 and llvm-19 (apt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang-19 llvm-19 >/dev/null ||
        { apt-get update >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang-19 llvm-19 >/dev/null; }
fi
if command -v rustup >/dev/null &&
    ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi

export CC_wasm32_unknown_unknown=clang-19 AR_wasm32_unknown_unknown=llvm-ar-19
cargo clippy --locked -p sotto-client --target wasm32-unknown-unknown -- -D warnings
