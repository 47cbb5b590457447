#!/usr/bin/env bash
# Lints (clippy, warnings as errors) the CLI's client library (crates/client)
# and the web client over it (crates/web) for the browser
# (wasm32-unknown-unknown): code behind `cfg(target_arch = "wasm32")` is
# linted nowhere else (docs/WEB_CLIENT.md). SQLite's C needs clang-19,
# which scripts/wasm-toolchain.sh installs with apt when missing.
#
#   scripts/check-wasm-client.sh
#
# Uses the default target directory, so the host's build scripts and proc
# macros from a native `cargo clippy` are reused (1 min instead of 5.5 in
# CI, where it runs right after the workspace's clippy).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/wasm-toolchain.sh
cargo clippy --locked -p sotto-client -p sotto-web --target wasm32-unknown-unknown -- -D warnings
