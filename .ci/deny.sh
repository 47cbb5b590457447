#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (policy in deny.toml): licenses,
# banned/wildcard dependencies, and sources (crates.io only).
#
# Not run: `cargo deny check advisories`. It needs the RustSec advisory
# database, which cargo-deny fetches from GitHub; this project's machines
# and CI reach only the package registries, so it cannot work here: it fails
# at once with "failed to fetch advisory database
# https://github.com/RustSec/advisory-db ... Could not resolve host:
# github.com" (exit 1), and `--disable-fetch` has no local database to use.
# Run it where GitHub is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deny --version >/dev/null 2>&1; then
    echo "== installing cargo-deny"
    cargo install cargo-deny --locked
fi

echo "== cargo deny check licenses bans sources"
cargo deny --locked check licenses bans sources
