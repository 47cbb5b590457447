#!/usr/bin/env bash
# The web client's browser tests (tests/browser): headless Debian Chromium
# driven by playwright-core 1.64.1 (the version whose Chromium matches
# Debian's package; no browser is downloaded), against the real binaries in
# target/debug (build them first: `cargo build --workspace --bins`, or run
# `cargo test --workspace`). Installs chromium with apt and playwright-core
# with npm when missing. SOTTO_SCREENSHOTS=DIR also saves screenshots.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "installing Debian's chromium (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null; }
fi
"${CHROMIUM:-/usr/bin/chromium}" --version

for bin in sotto sotto-server; do
    if [ ! -x "${SOTTO_BIN_DIR:-target/debug}/$bin" ]; then
        echo "${SOTTO_BIN_DIR:-target/debug}/$bin is missing: run \`cargo build --workspace --bins\` first" >&2
        exit 1
    fi
done

cd tests/browser
npm ci --no-audit --no-fund --loglevel=error
node --test --test-concurrency=1 ./*.test.mjs
