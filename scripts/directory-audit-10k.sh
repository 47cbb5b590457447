#!/bin/sh
# Audits a 10,000-account key directory end to end (issue #13): accounts
# written into a server's store, published by the server, audited over the
# protocol by `sotto audit`'s library (no username received) and offline by
# `sotto-server audit`, which must name a flipped stored byte's epoch.
# Too slow for CI in a debug build; CI runs the 1,000-account version.
set -eu
cd "$(dirname "$0")/.."
cargo build --bins -p sotto-server
cargo test -p sotto-testkit --test directory_audit_scale -- --ignored --nocapture \
    a_directory_of_10000_accounts_audits_and_names_a_flipped_byte
