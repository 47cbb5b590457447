# Sourced by the scripts that build Rust for the browser (build-web.sh,
# check-wasm-client.sh): makes sure the wasm32-unknown-unknown target and
# a C compiler for it are there, and tells cargo to use that compiler.
#
# rusqlite compiles SQLite's C to wasm through sqlite-wasm-rs, which needs
# clang 19 (Debian's default clang 14 fails on its C23 shim): clang-19 and
# llvm-19 are installed with apt when missing.

if ! command -v clang-19 >/dev/null || ! command -v llvm-ar-19 >/dev/null; then
    echo "$(basename "$0"): installing clang-19 and llvm-19 (apt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang-19 llvm-19 >/dev/null ||
        { apt-get update >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang-19 llvm-19 >/dev/null; }
fi
if command -v rustup >/dev/null &&
    ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "$(basename "$0"): adding the wasm32-unknown-unknown target" >&2
    rustup target add wasm32-unknown-unknown
fi
export CC_wasm32_unknown_unknown=clang-19 AR_wasm32_unknown_unknown=llvm-ar-19
